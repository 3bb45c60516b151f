// Small DOM helpers shared by the console's views: element building,
// formatting, an alert area, dialogs (native <dialog>) and copy to clipboard.

// h('button', { class: 'btn', onclick }, 'text', child, …)
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v)
    else if (k === 'class') e.className = v
    else if (k === 'dataset') Object.assign(e.dataset, v)
    else if (k === 'style' && typeof v === 'object') Object.assign(e.style, v)
    else if (k in e && typeof v !== 'string') e[k] = v
    else e.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue
    e.append(c instanceof Node ? c : String(c))
  }
  return e
}

// ------------------------------------------------------------ formatting --

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

export function formatBytes(n) {
  if (n == null) return ''
  let i = 0
  let v = n
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024
    i += 1
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0).replace(/\.0$/, '')} ${UNITS[i]}`
}

// "10 GiB", "500MB", "1.5 g", "12345" → bytes (binary units either way);
// "" → null; NaN when unreadable.
export function parseBytes(text) {
  const t = String(text).trim()
  if (!t) return null
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$/i.exec(t)
  if (!m) return NaN
  const exp = ' kmgtp'.indexOf(m[2].toLowerCase() || ' ')
  return Math.round(Number(m[1]) * 1024 ** exp)
}

// A folder field and a relative path become one clean path: no leading
// slash, no empty or "." segments. Ferry itself refuses "..".
export function joinPath(...parts) {
  return parts
    .filter((p) => p != null && p !== '')
    .join('/')
    .split('/')
    .filter((seg) => seg !== '' && seg !== '.')
    .join('/')
}

export function formatDate(iso) {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  const pad = (x) => String(x).padStart(2, '0')
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`
}

// "in 23 h", "5 min ago", "just now".
export function relativeTime(iso, now = Date.now()) {
  const t = new Date(iso).getTime()
  if (Number.isNaN(t)) return ''
  const s = Math.round((t - now) / 1000)
  const a = Math.abs(s)
  let text
  if (a < 45) return 'just now'
  if (a < 3600) text = `${Math.round(a / 60)} min`
  else if (a < 48 * 3600) text = `${Math.round(a / 3600)} h`
  else text = `${Math.round(a / 86400)} days`
  return s > 0 ? `in ${text}` : `${text} ago`
}

export function shortId(id, n = 8) {
  return id && id.length > n + 1 ? `${id.slice(0, n)}…` : id || ''
}

// ------------------------------------------------------------------ alerts --

// An element with role=alert: show(message) / clear().
export function alertArea(node) {
  return {
    show(message) {
      node.textContent = message
      node.hidden = false
    },
    clear() {
      node.textContent = ''
      node.hidden = true
    },
  }
}

export const errorText = (e) => (e && e.message) || String(e)

// --------------------------------------------------------------- clipboard --

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    // no clipboard API (plain http on another host): the old way
    const ta = h('textarea', { readonly: true, style: { position: 'fixed', opacity: '0' } }, text)
    document.body.append(ta)
    ta.select()
    let ok = false
    try {
      ok = document.execCommand('copy')
    } catch {
      ok = false
    }
    ta.remove()
    return ok
  }
}

// A small "Copy" button; `label` names what it copies, for screen readers.
export function copyButton(text, label) {
  const b = h('button', { type: 'button', class: 'btn-small', 'aria-label': label, title: label }, 'Copy')
  b.addEventListener('click', async () => {
    const ok = await copyText(text)
    b.textContent = ok ? 'Copied' : 'Copy failed'
    setTimeout(() => {
      b.textContent = 'Copy'
    }, 1500)
  })
  return b
}

// ---------------------------------------------------------------- dialogs --

let dialogSeq = 0

// A modal dialog. `body` is a node (or list); `actions` are buttons placed in
// the footer. Resolves with what `close(value)` is called with; Escape and
// the Cancel button resolve with `undefined`.
function modal({ title, body, actions, className }) {
  dialogSeq += 1
  const titleId = `dlg-title-${dialogSeq}`
  const dlg = h('dialog', { class: `dialog ${className || ''}`, 'aria-labelledby': titleId })
  let settle
  const done = new Promise((r) => {
    settle = r
  })
  let result
  const close = (value) => {
    result = value
    dlg.close()
  }
  dlg.addEventListener('close', () => {
    dlg.remove()
    settle(result)
  })
  dlg.append(h('h2', { id: titleId }, title), h('div', { class: 'dialog-body' }, body), h('div', { class: 'dialog-actions' }, actions(close)))
  document.body.append(dlg)
  dlg.showModal()
  return { dlg, done, close }
}

// Resolves true when confirmed.
export async function confirmDialog(title, message, { confirmLabel = 'OK', danger = false } = {}) {
  const { done } = modal({
    title,
    body: h('p', {}, message),
    className: 'dialog-confirm',
    actions: (close) => [
      h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => close(false) }, 'Cancel'),
      h('button', { type: 'button', class: `btn${danger ? ' btn-danger' : ''}`, 'data-confirm': '', onclick: () => close(true) }, confirmLabel),
    ],
  })
  return (await done) === true
}

// A form in a dialog. `fields`: [{ name, label, value, type, hint, options,
// required, placeholder }]. `submit(values)` may throw: its message shows in
// the dialog, which stays open. Resolves with submit's result, or undefined
// when cancelled.
export async function formDialog({ title, intro, fields, submitLabel = 'Save', submit }) {
  const err = h('p', { class: 'alert', role: 'alert', hidden: true })
  const inputs = {}
  const rows = fields.map((f) => {
    const id = `dlg-f-${++dialogSeq}`
    let input
    if (f.type === 'select') {
      input = h('select', { id, name: f.name }, f.options.map((o) => h('option', { value: o.value, selected: o.value === f.value }, o.label)))
    } else if (f.type === 'checkbox') {
      input = h('input', { id, name: f.name, type: 'checkbox', checked: !!f.value })
    } else {
      input = h('input', {
        id, name: f.name, type: 'text', value: f.value ?? '', required: !!f.required,
        placeholder: f.placeholder, spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off',
      })
    }
    inputs[f.name] = input
    const hint = f.hint ? h('span', { class: 'field-hint', id: `${id}-hint` }, f.hint) : null
    if (hint) input.setAttribute('aria-describedby', hint.id)
    if (f.type === 'checkbox') return h('div', { class: 'field field-check' }, input, h('label', { for: id }, f.label), hint)
    return h('div', { class: 'field' }, h('label', { for: id }, f.label), input, hint)
  })
  const formId = `dlg-form-${++dialogSeq}`
  const form = h('form', { id: formId, class: 'dialog-form', novalidate: true }, intro ? h('p', {}, intro) : null, rows, err)
  let busy = false
  const { done, close, dlg } = modal({
    title,
    body: form,
    actions: (closeFn) => [
      h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => closeFn(undefined) }, 'Cancel'),
      h('button', { type: 'submit', class: 'btn', form: formId, 'data-submit': '' }, submitLabel),
    ],
  })
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    if (busy) return
    const values = {}
    for (const [k, input] of Object.entries(inputs)) {
      values[k] = input.type === 'checkbox' ? input.checked : input.value.trim()
    }
    busy = true
    dlg.setAttribute('aria-busy', 'true')
    err.hidden = true
    try {
      close(await submit(values))
    } catch (e) {
      err.textContent = errorText(e)
      err.hidden = false
    } finally {
      busy = false
      dlg.removeAttribute('aria-busy')
    }
  })
  const first = Object.values(inputs)[0]
  if (first) {
    first.focus()
    if (first.select) first.select()
  }
  return done
}

// Shows a secret once (a new token), with a copy button.
export async function secretDialog(title, message, secret) {
  const field = h('input', { type: 'text', readonly: true, value: secret, class: 'secret', 'aria-label': 'Token', spellcheck: 'false' })
  const { done } = modal({
    title,
    className: 'dialog-secret',
    body: [h('p', {}, message), h('div', { class: 'secret-row' }, field, copyButton(secret, 'Copy the token')),
      h('p', { class: 'field-hint' }, 'It is shown only this once: Ferry keeps only a hash of it.')],
    actions: (close) => [h('button', { type: 'button', class: 'btn', onclick: () => close(true) }, 'Done')],
  })
  field.focus()
  field.select()
  return done
}

// A dialog around arbitrary content that the caller keeps updating (the
// token list); resolves when closed.
export function panelDialog(title, content) {
  return modal({
    title,
    body: content,
    className: 'dialog-wide',
    actions: (close) => [h('button', { type: 'button', class: 'btn btn-secondary', onclick: () => close(true) }, 'Close')],
  })
}

// A progress bar with its numbers for assistive technology.
export function progressBar(value, max, label) {
  const pct = max ? Math.min(100, (100 * value) / max) : 0
  return h('span', {
    class: `bar${pct >= 90 ? ' is-full' : ''}`,
    role: 'progressbar',
    'aria-valuemin': '0',
    'aria-valuemax': '100',
    'aria-valuenow': pct.toFixed(0),
    'aria-label': label,
  }, h('span', { style: { width: `${pct.toFixed(1)}%` } }))
}
