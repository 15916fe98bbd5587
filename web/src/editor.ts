// The collaborative Markdown editor (responders and admins): CodeMirror 6
// bound to the document's `body` text by y-codemirror.next, with remote
// cursors and names from awareness (cursors.ts). Loaded on demand, so
// viewers never download it. Nothing here reads the whole document after
// the editor is created: y-codemirror.next turns each Y.Text change into a
// CodeMirror change and back, and CodeMirror draws only what is visible.

import * as Y from 'yjs'
import { EditorView } from 'codemirror'
import { Compartment, EditorState, type Extension } from '@codemirror/state'
import { drawSelection, highlightSpecialChars, keymap, placeholder } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { HighlightStyle, syntaxHighlighting } from '@codemirror/language'
import { tags } from '@lezer/highlight'
import { markdownLanguage } from '@codemirror/lang-markdown'
import { yCollab, yRemoteSelectionsTheme, yUndoManagerKeymap } from 'y-codemirror.next'

import { LARGE_DOCUMENT_CHARS, type DocSession } from './collab'
import { remoteCursors } from './cursors'

/** Quiet Markdown highlighting: structure stands out, nothing shouts. */
const markdownStyle = HighlightStyle.define([
  { tag: tags.heading1, fontWeight: '700', fontSize: '1.15em', color: '#0f172a' },
  { tag: [tags.heading2, tags.heading3, tags.heading4, tags.heading5, tags.heading6], fontWeight: '700', color: '#1e3a8a' },
  { tag: tags.strong, fontWeight: '700' },
  { tag: tags.emphasis, fontStyle: 'italic' },
  { tag: tags.strikethrough, textDecoration: 'line-through' },
  { tag: [tags.link, tags.url], color: '#1d4ed8', textDecoration: 'underline' },
  { tag: tags.monospace, color: '#7c2d12' },
  { tag: [tags.processingInstruction, tags.meta, tags.contentSeparator], color: '#64748b' },
  { tag: tags.quote, color: '#334155', fontStyle: 'italic' },
])

/** Markdown parsing and highlighting; off for large documents. */
const markdown: Extension = [syntaxHighlighting(markdownStyle), markdownLanguage]

/**
 * Large documents are edited without Markdown highlighting. The Markdown
 * parser handles a paragraph in one piece, and pasted logs are one huge
 * paragraph: at 3.5 MB every keystroke at its end cost 0.7 s of parsing.
 * Off past `LARGE_DOCUMENT_CHARS`, back on below three quarters of it (so
 * a document around the limit does not flip on every keystroke). The
 * switch rides on the transaction that crosses the limit, so the parser
 * never sees the large text.
 */
function markdownUnlessLarge(initialLength: number): Extension {
  const compartment = new Compartment()
  return [
    compartment.of(initialLength <= LARGE_DOCUMENT_CHARS ? markdown : []),
    EditorState.transactionExtender.of((tr) => {
      if (!tr.docChanged) return null
      const on = compartment.get(tr.startState) === markdown
      const length = tr.newDoc.length
      const next = on ? length <= LARGE_DOCUMENT_CHARS : length <= LARGE_DOCUMENT_CHARS * 0.75
      return next === on ? null : { effects: compartment.reconfigure(next ? markdown : []) }
    }),
  ]
}

/** The collaborative editor for responders and admins. */
export function mountEditor(parent: HTMLElement, session: DocSession, label: string): EditorView {
  const undoManager = new Y.UndoManager(session.text)
  const doc = session.text.toString()
  const state = EditorState.create({
    doc,
    extensions: [
      highlightSpecialChars(),
      drawSelection(),
      markdownUnlessLarge(doc.length),
      EditorView.lineWrapping,
      placeholder('The incident document is loading…'),
      // Tab is left alone so keyboard users can move on from the editor.
      keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
      // The binding without its remote selections (no awareness passed):
      // ours (cursors.ts) scale with the document and trust less.
      yCollab(session.text, null, { undoManager }),
      yRemoteSelectionsTheme,
      remoteCursors(session.text, session.provider.awareness),
      EditorView.contentAttributes.of({ 'aria-label': label, 'aria-multiline': 'true' }),
    ],
  })
  return new EditorView({ state, parent })
}

