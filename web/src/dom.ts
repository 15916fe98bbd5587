// Small DOM helpers: the whole app is plain TypeScript building real
// elements (no framework, no innerHTML with data).

type Child = Node | string | number | null | undefined | false | Child[]

type Attrs = {
  [key: string]: string | number | boolean | null | undefined | EventListener | ((event: never) => void)
}

/**
 * Creates an element: `h('button', { class: 'primary', onclick: fn }, 'Save')`.
 * Attributes named `on...` become event listeners; `true` sets a boolean
 * attribute, `false`/`null`/`undefined` leaves it out. Text is always text.
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag)
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue
      if (key.startsWith('on') && typeof value === 'function') {
        element.addEventListener(key.slice(2), value as EventListener)
      } else if (key === 'style') {
        // Through the CSSOM, which a strict Content-Security-Policy allows.
        element.style.cssText = String(value)
      } else if (key === 'value' && 'value' in element) {
        ;(element as HTMLInputElement).value = String(value)
      } else if (value === true) {
        element.setAttribute(key, '')
      } else {
        element.setAttribute(key, String(value))
      }
    }
  }
  append(element, children)
  return element
}

function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    if (Array.isArray(child)) append(parent, child)
    else if (child instanceof Node) parent.appendChild(child)
    else parent.appendChild(document.createTextNode(String(child)))
  }
}

/**
 * Replaces the children of `container`, keeping keyboard focus: when the
 * focused element inside it carries `data-key`, the new element with the
 * same key gets the focus back. Live updates re-render whole sections, and
 * a responder navigating with the keyboard must not lose their place.
 */
export function replaceChildren(container: Element, ...children: Child[]): void {
  const active = document.activeElement
  const key = active instanceof HTMLElement && container.contains(active) ? active.dataset.key : undefined
  const selection = active instanceof HTMLInputElement || active instanceof HTMLTextAreaElement ? [active.selectionStart, active.selectionEnd] : null
  const fragment = document.createDocumentFragment()
  append(fragment, children)
  container.replaceChildren(fragment)
  if (key) {
    const again = container.querySelector<HTMLElement>(`[data-key="${CSS.escape(key)}"]`)
    again?.focus()
    if (selection && selection[0] !== null && (again instanceof HTMLInputElement || again instanceof HTMLTextAreaElement)) {
      try {
        again.setSelectionRange(selection[0], selection[1])
      } catch {
        // Not a text field (e.g. a number input): keep the default caret.
      }
    }
  }
}

/** A stable id for label/field pairs. */
let nextId = 0
export function uid(prefix: string): string {
  nextId += 1
  return `${prefix}-${nextId}`
}

/** A labelled form field: `<div class=field><label for>..</label>{control}</div>`. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  if (!control.id) control.id = uid('f')
  const hintEl = hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id)
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl)
}

/** A yes/no radio group with a legend. */
export function yesNo(name: string, legend: string): HTMLFieldSetElement {
  const yesId = uid(name)
  const noId = uid(name)
  return h(
    'fieldset',
    { class: 'yesno' },
    h('legend', null, legend),
    h('span', { class: 'choice' }, h('input', { type: 'radio', name, id: yesId, value: 'yes' }), h('label', { for: yesId }, 'Yes')),
    h('span', { class: 'choice' }, h('input', { type: 'radio', name, id: noId, value: 'no' }), h('label', { for: noId }, 'No')),
  )
}

/** The value of a yes/no group in a form: true, false or null (unanswered). */
export function readYesNo(form: HTMLFormElement, name: string): boolean | null {
  const checked = form.querySelector<HTMLInputElement>(`input[name="${name}"]:checked`)
  if (!checked) return null
  return checked.value === 'yes'
}
