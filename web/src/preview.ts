// The read-only document preview (viewers). Loaded on demand, so
// responders never download the Markdown renderer.

import { marked } from 'marked'
import DOMPurify from 'dompurify'

import type { DocSession } from './collab'

/**
 * The read-only preview for viewers: the Markdown rendered by `marked` and
 * sanitised by DOMPurify (no raw HTML from the document reaches the page
 * unsanitised), re-rendered as the document changes.
 */
export function mountPreview(parent: HTMLElement, session: DocSession): () => void {
  let scheduled = false
  const render = (): void => {
    scheduled = false
    const html = marked.parse(session.text.toString(), { async: false, gfm: true })
    const clean = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'button', 'textarea', 'select'] })
    parent.innerHTML = clean
    // Links from the document open in a new tab and never get the page's opener.
    for (const link of parent.querySelectorAll('a[href]')) {
      link.setAttribute('target', '_blank')
      link.setAttribute('rel', 'noopener noreferrer')
    }
  }
  const schedule = (): void => {
    if (scheduled) return
    scheduled = true
    requestAnimationFrame(render)
  }
  session.text.observe(schedule)
  render()
  return () => session.text.unobserve(schedule)
}
