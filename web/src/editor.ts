// The collaborative Markdown editor (responders and admins): CodeMirror 6
// bound to the document's `body` text by y-codemirror.next, with remote
// cursors and names from awareness. Loaded on demand, so viewers never
// download it.

import * as Y from 'yjs'
import { EditorView } from 'codemirror'
import { EditorState } from '@codemirror/state'
import { drawSelection, highlightSpecialChars, keymap, placeholder } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { HighlightStyle, syntaxHighlighting } from '@codemirror/language'
import { tags } from '@lezer/highlight'
import { markdownLanguage } from '@codemirror/lang-markdown'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

import type { DocSession } from './collab'

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

/** The collaborative editor for responders and admins. */
export function mountEditor(parent: HTMLElement, session: DocSession, label: string): EditorView {
  const undoManager = new Y.UndoManager(session.text)
  const state = EditorState.create({
    doc: session.text.toString(),
    extensions: [
      highlightSpecialChars(),
      drawSelection(),
      syntaxHighlighting(markdownStyle),
      markdownLanguage,
      EditorView.lineWrapping,
      placeholder('The incident document is loading…'),
      // Tab is left alone so keyboard users can move on from the editor.
      keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
      yCollab(session.text, session.provider.awareness, { undoManager }),
      EditorView.contentAttributes.of({ 'aria-label': label, 'aria-multiline': 'true' }),
    ],
  })
  return new EditorView({ state, parent })
}

