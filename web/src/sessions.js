// Sessions: the open upload sessions (admins: everyone's), each upload with
// its progress and the byte ranges still missing; abort a session.
import { api } from './api.js'
import {
  alertArea, confirmDialog, errorText, formatBytes, formatDate, h, progressBar, relativeTime, shortId,
} from './ui.js'

const REFRESH_MS = 5000

// [[0, 4194303], [8388608, null]] (inclusive ranges) → "0–4 MiB, 8 MiB–end"
export function formatMissing(missing, size) {
  if (!Array.isArray(missing) || missing.length === 0) return 'nothing'
  const at = (n) => (n === 0 ? '0' : formatBytes(n))
  return missing
    .map(([start, end]) => {
      const stop = end == null || (size != null && end + 1 >= size) ? 'end' : at(end + 1)
      return `${at(start)}–${stop}`
    })
    .join(', ')
}

const exactMissing = (missing) =>
  (missing || []).map(([s, e]) => `bytes ${s}–${e == null ? 'end' : e}`).join(', ')

export function createSessionsView({ getMe, announce }) {
  const $ = (id) => document.getElementById(id)
  const el = {
    all: $('sessions-all'),
    allWrap: $('sessions-all-wrap'),
    refresh: $('sessions-refresh'),
    updated: $('sessions-updated'),
    table: $('sessions-table'),
    body: $('sessions-body'),
    empty: $('sessions-empty'),
  }
  const alert = alertArea($('sessions-alert'))
  let active = false
  let timer = null
  let loading = false

  function uploadItem(u) {
    const size = u.size
    const got = u.received_bytes || 0
    const pct = size ? Math.round((100 * got) / size) : null
    return h('li', { class: 'upload', dataset: { uploadId: u.id, path: u.path } },
      h('div', { class: 'upload-path' }, u.path),
      h('div', { class: 'upload-progress' },
        progressBar(got, size || 0, `${u.path}: ${pct == null ? formatBytes(got) : `${pct} %`} received`),
        h('span', { class: 'upload-bytes' },
          size == null ? `${formatBytes(got)} received, length not known yet` : `${formatBytes(got)} of ${formatBytes(size)} (${pct} %)`)),
      h('div', { class: 'upload-missing', title: exactMissing(u.missing) }, 'Missing: ', h('span', { class: 'missing' }, formatMissing(u.missing, size))),
    )
  }

  function row(s) {
    const uploads = Array.isArray(s.uploads) ? s.uploads : []
    return h('tr', { class: 'session', dataset: { sessionId: s.id } },
      h('td', {}, h('code', { title: s.id }, shortId(s.id, 10))),
      h('td', {}, s.owner),
      h('td', {}, s.space),
      h('td', {}, s.dialect),
      h('td', { title: s.created_at }, formatDate(s.created_at)),
      h('td', { title: s.expires_at }, relativeTime(s.expires_at)),
      h('td', { class: 'col-uploads' },
        uploads.length
          ? h('ul', { class: 'uploads' }, uploads.map(uploadItem))
          : h('span', { class: 'muted' }, 'no upload yet')),
      h('td', { class: 'col-actions' },
        h('button', {
          type: 'button', class: 'btn-small btn-small-danger', 'data-action': 'abort', 'data-focus-key': `abort-${s.id}`,
          'aria-label': `Abort session ${shortId(s.id, 10)}`, onclick: () => abort(s),
        }, 'Abort')),
    )
  }

  async function abort(s) {
    const files = (s.uploads || []).map((u) => u.path).join(', ')
    const ok = await confirmDialog('Abort session',
      `Abort session ${shortId(s.id, 10)} of ${s.owner}${files ? ` (${files})` : ''}? The bytes received so far are discarded.`,
      { confirmLabel: 'Abort session', danger: true })
    if (!ok) return
    try {
      await api('DELETE', `/v1/sessions/${encodeURIComponent(s.id)}`)
      announce(`Session ${shortId(s.id, 10)} aborted.`)
      alert.clear()
    } catch (e) {
      alert.show(`Could not abort session ${shortId(s.id, 10)}: ${errorText(e)}`)
    }
    load()
  }

  async function load() {
    const me = getMe()
    if (!me || loading) return
    loading = true
    el.allWrap.hidden = !me.admin
    const all = me.admin && el.all.checked
    try {
      const r = await api('GET', `/v1/sessions?state=open&uploads=true${all ? '&all=true' : ''}`)
      const list = Array.isArray(r?.sessions) ? r.sessions : []
      list.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
      // Keep the focus on the same button across a refresh.
      const focusKey = document.activeElement?.dataset?.focusKey
      el.body.replaceChildren(...list.map(row))
      if (focusKey) el.body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)?.focus()
      el.table.hidden = list.length === 0
      el.empty.hidden = list.length > 0
      el.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`
      alert.clear()
    } catch (e) {
      alert.show(`Could not list sessions: ${errorText(e)}`)
    } finally {
      loading = false
    }
  }

  function tick() {
    if (active && document.visibilityState === 'visible') load()
  }

  el.refresh.addEventListener('click', () => load())
  el.all.addEventListener('change', () => load())
  document.addEventListener('visibilitychange', tick)

  return {
    show() {
      active = true
      load()
      clearInterval(timer)
      timer = setInterval(tick, REFRESH_MS)
    },
    hide() {
      active = false
      clearInterval(timer)
      timer = null
    },
  }
}
