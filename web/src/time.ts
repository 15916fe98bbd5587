// Time display: always UTC and labelled as such, with the reader's local
// time in the `title` attribute. During an incident people in several time
// zones read the same page; "14:03" alone is ambiguous.

import { h } from './dom'

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n)
}

/** `14:03:12 UTC` */
export function utcClock(date: Date): string {
  return `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} UTC`
}

/** `14:03 UTC` */
export function utcShort(date: Date): string {
  return `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())} UTC`
}

/** `2025-03-01` */
export function utcDate(date: Date): string {
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`
}

/** Clock time, with the date in front when it is not today (UTC). */
export function utcWhen(date: Date, seconds = true): string {
  const clock = seconds ? utcClock(date) : utcShort(date)
  return utcDate(date) === utcDate(new Date()) ? clock : `${utcDate(date)} ${clock}`
}

/** Local time for tooltips: `Tue, 4 Mar 2025, 15:03:12 (local)`. */
export function localTitle(date: Date): string {
  return `${date.toLocaleString(undefined, {
    weekday: 'short',
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    timeZoneName: 'short',
  })} (your local time)`
}

/** A `<time>` element showing UTC with local time on hover. */
export function timeEl(iso: string, seconds = true): HTMLTimeElement {
  const date = new Date(iso)
  return h('time', { datetime: iso, title: localTitle(date) }, utcWhen(date, seconds))
}

/** `12:04` or `1:02:03` for a duration in milliseconds (non-negative). */
export function duration(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000))
  const hours = Math.floor(total / 3600)
  const minutes = Math.floor((total % 3600) / 60)
  const seconds = total % 60
  return hours > 0 ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`
}

/** `3 h 20 min`, `12 min`, `less than a minute` */
export function roughDuration(ms: number): string {
  const minutes = Math.floor(Math.max(0, ms) / 60000)
  if (minutes < 1) return 'less than a minute'
  if (minutes < 60) return `${minutes} min`
  const hours = Math.floor(minutes / 60)
  const rest = minutes % 60
  return rest ? `${hours} h ${rest} min` : `${hours} h`
}
