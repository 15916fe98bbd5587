// The read-only document preview (viewers). Loaded on demand, so
// responders never download the Markdown renderer.
//
// Large documents. Rendering Markdown is not linear in the input (marked
// recurses per nesting level and overflows the stack on a few thousand `>`;
// deep lists take seconds), and re-rendering megabytes on every remote
// keystroke freezes the page. So:
//
// - Past `PLAIN_TEXT_THRESHOLD` characters the document is shown as plain
//   text (`textContent`, never HTML) with a notice saying why. A document
//   that the renderer fails on (or takes too long to sanitise) falls back
//   to the same view.
// - The plain text is put into the page in blocks of about `BLOCK_CHARS`,
//   cut at line ends; a re-render only touches the blocks whose text
//   changed, and the browser skips layout of blocks off screen
//   (`content-visibility: auto` in style.css).
// - Re-renders are coalesced: at most one per animation frame, never more
//   often than every `LARGE_RENDER_INTERVAL_MS` for a plain-text document,
//   and spaced by four times the cost of the previous render, so rendering
//   takes at most about a fifth of the page's time whatever the size.

import { Marked, type Token, type Tokens } from 'marked'
import DOMPurify from 'dompurify'

import { LARGE_DOCUMENT_CHARS, type DocSession } from './collab'
import { h } from './dom'

/** Documents longer than this are shown as plain text (see `LARGE_DOCUMENT_CHARS`). */
export const PLAIN_TEXT_THRESHOLD = LARGE_DOCUMENT_CHARS
/** Characters per plain-text block (cut at the next line end). */
const BLOCK_CHARS = 16_384
/** Minimum time between two renders of a plain-text (large) document. */
const LARGE_RENDER_INTERVAL_MS = 250
/** Time between renders, as a multiple of what the last render cost. */
const COST_FACTOR = 4

type Mode = 'markdown' | 'plain'

/**
 * The Markdown renderer: GitHub-flavoured, as chat and issue trackers
 * render it. `breaks`: a single line break is a line break, so viewers see
 * the lines the editors wrote (a line typed under "Who is affected" stays
 * its own line rather than joining the paragraph above it). Its own
 * instance, so no option leaks into any other use of `marked`.
 */
const markdown = new Marked({ async: false, gfm: true, breaks: true, walkTokens: emptyTaskItems })

/** A task item marker with nothing after it on its line: `[ ]`, `[x]`, `[X]`. */
const EMPTY_TASK = /^\[([ xX])\][ \t]*(?=\n|$)/

/**
 * GFM makes a task item only when text follows the box (`- [ ] text`), so
 * the template's empty `- [ ] ` rendered as a literal "[ ]". Such an item
 * becomes an (unchecked or checked, disabled) checkbox too, as marked
 * renders a filled one: a `checkbox` token before the item's text (inside
 * its paragraph in a loose list).
 */
function emptyTaskItems(token: Token): void {
  if (token.type !== 'list_item') return
  const item = token as Tokens.ListItem
  if (item.task) return
  const first = item.tokens[0]
  if (!first || (first.type !== 'text' && first.type !== 'paragraph')) return
  const block = first as Tokens.Text | Tokens.Paragraph
  const inline = block.tokens?.[0]
  if (!block.tokens || !inline || inline.type !== 'text') return
  const match = EMPTY_TASK.exec(inline.raw)
  if (!match) return
  const checked = match[1] !== ' '
  const rest = inline.raw.slice(match[0].length)
  if (rest) {
    inline.raw = rest
    ;(inline as Tokens.Text).text = (inline as Tokens.Text).text.slice(match[0].length)
  } else block.tokens.shift()
  const checkbox: Tokens.Checkbox = { type: 'checkbox', raw: match[0], checked }
  item.task = true
  item.checked = checked
  if (item.loose || first.type === 'paragraph') block.tokens.unshift(checkbox)
  else item.tokens.unshift(checkbox)
}

/**
 * The read-only preview for viewers: the Markdown rendered by `marked` and
 * sanitised by DOMPurify (no raw HTML from the document reaches the page
 * unsanitised), or plain text for large documents, re-rendered (coalesced)
 * as the document changes.
 */
export function mountPreview(parent: HTMLElement, session: DocSession): () => void {
  const notice = h('p', { class: 'preview-notice', role: 'note' })
  const plain = h('pre', { class: 'preview-plain' })
  /** The text of each plain-text block shown, in order. */
  let blocks: string[] = []
  let mode: Mode | null = null
  let noticeText = ''

  let frame = 0
  let timer = 0
  let lastEnd = 0
  let lastCost = 0
  let lastMode: Mode = 'markdown'
  let destroyed = false

  const showMarkdown = (clean: string): void => {
    if (mode !== 'markdown') {
      mode = 'markdown'
      blocks = []
      plain.replaceChildren()
      parent.classList.add('markdown')
      parent.dataset.mode = 'markdown'
    }
    parent.innerHTML = clean
    // Links from the document open in a new tab and never get the page's opener.
    for (const link of parent.querySelectorAll('a[href]')) {
      link.setAttribute('target', '_blank')
      link.setAttribute('rel', 'noopener noreferrer')
    }
  }

  const showPlain = (text: string, why: string): void => {
    if (mode !== 'plain') {
      mode = 'plain'
      parent.classList.remove('markdown')
      parent.dataset.mode = 'plain'
      parent.replaceChildren(notice, plain)
    }
    if (why !== noticeText) {
      noticeText = why
      notice.textContent = why
    }
    const next = splitBlocks(text)
    const children = plain.children
    for (let i = 0; i < next.length; i++) {
      if (i < blocks.length) {
        if (blocks[i] !== next[i]) children[i].textContent = next[i]
      } else {
        plain.appendChild(h('span', { class: 'preview-block' }, next[i]))
      }
    }
    while (plain.children.length > next.length) plain.lastElementChild?.remove()
    blocks = next
  }

  const render = (): void => {
    frame = 0
    timer = 0
    if (destroyed) return
    const started = performance.now()
    const length = session.text.length
    const text = session.text.toString()
    if (length > PLAIN_TEXT_THRESHOLD) {
      showPlain(text, `Large document (${size(length)}): shown as plain text, without Markdown formatting, to keep this page responsive.`)
    } else {
      let clean: string | null = null
      try {
        const html = markdown.parse(text, { async: false })
        clean = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'button', 'textarea', 'select'] })
      } catch {
        // e.g. "Maximum call stack size exceeded" on deeply nested quotes.
      }
      if (clean === null) showPlain(text, 'This document cannot be shown as Markdown (it nests too deeply): shown as plain text.')
      else showMarkdown(clean)
    }
    lastEnd = performance.now()
    lastCost = lastEnd - started
    lastMode = mode ?? 'markdown'
  }

  const schedule = (): void => {
    if (frame || timer || destroyed) return
    const gap = Math.max(lastMode === 'plain' ? LARGE_RENDER_INTERVAL_MS : 0, COST_FACTOR * lastCost)
    const wait = lastEnd + gap - performance.now()
    if (wait <= 0) frame = requestAnimationFrame(render)
    else
      timer = window.setTimeout(() => {
        timer = 0
        frame = requestAnimationFrame(render)
      }, wait)
  }

  session.text.observe(schedule)
  render()
  return () => {
    destroyed = true
    session.text.unobserve(schedule)
    if (frame) cancelAnimationFrame(frame)
    if (timer) window.clearTimeout(timer)
  }
}

/**
 * Cuts `text` into blocks of at least `BLOCK_CHARS` characters, each
 * ending after a line break (the last one at the end). Cuts depend only on
 * the text since the previous cut, so an edit changes the blocks around it
 * and the cuts after it soon fall on the same line ends again.
 */
function splitBlocks(text: string): string[] {
  const out: string[] = []
  let start = 0
  while (start < text.length) {
    let end = text.indexOf('\n', start + BLOCK_CHARS)
    // No line break soon (one huge line): cut anyway, at a bounded size.
    if (end < 0 || end - start > 4 * BLOCK_CHARS) {
      end = Math.min(text.length, start + 4 * BLOCK_CHARS) - 1
      // Never between the two halves of a surrogate pair.
      const code = text.charCodeAt(end)
      if (code >= 0xd800 && code <= 0xdbff) end += 1
    }
    out.push(text.slice(start, end + 1))
    start = end + 1
  }
  return out
}

/** The size for people: characters, counted as bytes of plain text. */
function size(chars: number): string {
  if (chars >= 1_000_000) return `about ${(chars / 1_000_000).toFixed(1)} MB`
  return `about ${Math.round(chars / 1000)} KB`
}
