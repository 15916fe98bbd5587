// Remote carets and selections in the editor, from awareness. Replaces
// y-codemirror.next's `yRemoteSelections` (same class names, so the same
// look), which does not scale with the document or the number of people:
//
// - it turned every remote cursor's relative position into an index (a walk
//   over the Y.Text's items) on every editor update, scrolling included;
//   here that happens only when awareness or the document changed remotely,
//   and local edits just map the decorations;
// - it drew a multi-line remote selection as one decoration per line, so
//   one person pressing Ctrl+A in a 60 MB document made a million
//   decorations on everyone else's page on every update; here a selection
//   is one mark, which CodeMirror draws only where it is visible;
// - it recomputed the local cursor's relative positions (another walk) on
//   every update; here only when the selection really moved.
//
// Awareness is written by clients: names are cut to a sane length, colours
// come from the user id (`colourFor`), never from the client's state (they
// end up in style attributes), and malformed cursors are ignored.

import * as Y from 'yjs'
import { Annotation, type Range } from '@codemirror/state'
import { Decoration, type DecorationSet, type EditorView, ViewPlugin, type ViewUpdate, WidgetType } from '@codemirror/view'
import { ySyncAnnotation } from 'y-codemirror.next'
import type { Awareness } from 'y-protocols/awareness'

import { awarenessUser } from './collab'

const refresh = Annotation.define<true>()

class CaretWidget extends WidgetType {
  constructor(
    readonly color: string,
    readonly name: string,
  ) {
    super()
  }

  toDOM(): HTMLElement {
    const caret = document.createElement('span')
    caret.className = 'cm-ySelectionCaret'
    caret.style.backgroundColor = this.color
    caret.style.borderColor = this.color
    const dot = document.createElement('div')
    dot.className = 'cm-ySelectionCaretDot'
    const info = document.createElement('div')
    info.className = 'cm-ySelectionInfo'
    info.textContent = this.name
    caret.append('\u2060', dot, '\u2060', info, '\u2060')
    return caret
  }

  eq(other: CaretWidget): boolean {
    return other.color === this.color && other.name === this.name
  }

  get estimatedHeight(): number {
    return -1
  }

  ignoreEvent(): boolean {
    return true
  }
}

/** Remote carets and selections of everyone else in the document. */
export function remoteCursors(ytext: Y.Text, awareness: Awareness) {
  return ViewPlugin.fromClass(
    class {
      decorations: DecorationSet = Decoration.none
      /** The local selection last published, in editor positions (mapped through edits). */
      private sent: { anchor: number; head: number } | null = null
      private frame = 0
      private readonly onChange: (change: { added: number[]; updated: number[]; removed: number[] }) => void

      constructor(private readonly view: EditorView) {
        this.onChange = ({ added, updated, removed }) => {
          const others = [...added, ...updated, ...removed].some((id) => id !== awareness.clientID)
          // Coalesced: a burst of cursor moves costs one recomputation per frame.
          if (others && !this.frame) {
            this.frame = requestAnimationFrame(() => {
              this.frame = 0
              this.view.dispatch({ annotations: refresh.of(true) })
            })
          }
        }
        awareness.on('change', this.onChange)
        this.decorations = this.build()
      }

      update(update: ViewUpdate): void {
        const remoteEdit = update.transactions.some((tr) => tr.annotation(ySyncAnnotation) !== undefined)
        if (this.sent && update.docChanged) {
          this.sent = { anchor: update.changes.mapPos(this.sent.anchor), head: update.changes.mapPos(this.sent.head) }
        }
        this.publish(update)
        if (remoteEdit || update.transactions.some((tr) => tr.annotation(refresh))) this.decorations = this.build()
        else if (update.docChanged) this.decorations = this.decorations.map(update.changes)
      }

      /** Publishes the local selection in awareness when it moved (only while the editor has the focus). */
      private publish(update: ViewUpdate): void {
        const local = awareness.getLocalState()
        if (local === null) return
        const view = update.view
        if (!(view.hasFocus && view.dom.ownerDocument.hasFocus())) return
        const { anchor, head } = update.state.selection.main
        if (this.sent && this.sent.anchor === anchor && this.sent.head === head && local.cursor) return
        const anchorPos = Y.createRelativePositionFromTypeIndex(ytext, anchor)
        const headPos = head === anchor ? anchorPos : Y.createRelativePositionFromTypeIndex(ytext, head)
        this.sent = { anchor, head }
        awareness.setLocalStateField('cursor', { anchor: anchorPos, head: headPos })
      }

      private build(): DecorationSet {
        const doc = ytext.doc
        if (!doc) return Decoration.none
        const length = this.view.state.doc.length
        const ranges: Array<Range<Decoration>> = []
        for (const [clientId, state] of awareness.getStates()) {
          if (clientId === awareness.clientID) continue
          const cursor = (state as { cursor?: { anchor?: unknown; head?: unknown } | null }).cursor
          if (!cursor || typeof cursor.anchor !== 'object' || typeof cursor.head !== 'object' || !cursor.anchor || !cursor.head) continue
          let anchor: number
          let head: number
          try {
            const a = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(cursor.anchor), doc)
            const b = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(cursor.head), doc)
            if (!a || !b || a.type !== ytext || b.type !== ytext) continue
            anchor = Math.min(Math.max(a.index, 0), length)
            head = Math.min(Math.max(b.index, 0), length)
          } catch {
            continue // a malformed cursor from some client
          }
          const user = awarenessUser(state)
          const from = Math.min(anchor, head)
          const to = Math.max(anchor, head)
          if (from < to) {
            ranges.push(Decoration.mark({ class: 'cm-ySelection', attributes: { style: `background-color: ${user.colorLight}` } }).range(from, to))
          }
          ranges.push(Decoration.widget({ side: head - anchor > 0 ? -1 : 1, widget: new CaretWidget(user.color, user.name ?? 'Anonymous') }).range(head))
        }
        return Decoration.set(ranges, true)
      }

      destroy(): void {
        awareness.off('change', this.onChange)
        if (this.frame) cancelAnimationFrame(this.frame)
      }
    },
    { decorations: (plugin) => plugin.decorations },
  )
}
