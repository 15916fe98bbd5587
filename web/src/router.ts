// Client-side navigation with the History API (the server answers every
// non-API path with index.html).

let onRoute: () => void = () => {}

export function setRouteHandler(handler: () => void): void {
  onRoute = handler
}

export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, '', path)
  else history.pushState(null, '', path)
  onRoute()
}
