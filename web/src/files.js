// Files: browse a space's folders, download, rename/move, delete; "New
// folder" (client-side until a file is in it) and "Upload here".
import { api, apiBlob, fileUrl, listUrl } from './api.js'
import {
  alertArea, confirmDialog, copyButton, errorText, formDialog, formatBytes, formatDate, h, joinPath,
} from './ui.js'

const STATE_KEY = 'ferry.files'

const parentOf = (p) => p.split('/').slice(0, -1).join('/')
const baseName = (p) => p.split('/').pop()

export function createFilesView({ getMe, uploadHere, announce, refreshMe }) {
  const $ = (id) => document.getElementById(id)
  const el = {
    space: $('files-space'),
    crumbs: $('files-crumbs'),
    table: $('files-table'),
    body: $('files-body'),
    empty: $('files-empty'),
    note: $('files-note'),
    newFolder: $('files-new-folder'),
    uploadHere: $('files-upload-here'),
    refresh: $('files-refresh'),
  }
  const alert = alertArea($('files-alert'))

  let space = ''
  let folder = ''
  let loadSeq = 0
  // Folders made with "New folder" that hold no file yet: "space\npath".
  const pending = new Set()

  try {
    const s = JSON.parse(sessionStorage.getItem(STATE_KEY) || 'null')
    if (s && typeof s.space === 'string') {
      space = s.space
      folder = typeof s.folder === 'string' ? s.folder : ''
    }
  } catch {
    // ignore
  }
  const save = () => {
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify({ space, folder }))
    } catch {
      // storage off
    }
  }

  const spaces = () => {
    const me = getMe()
    if (!me) return []
    if (Array.isArray(me.spaces) && me.spaces.length) return me.spaces
    return [{ name: me.home_space, access: 'owner' }]
  }
  const access = () => spaces().find((s) => s.name === space)?.access || 'read'
  const canWrite = () => access() !== 'read'

  function renderSpaces() {
    const list = spaces()
    if (!list.some((s) => s.name === space)) {
      space = getMe()?.home_space || list[0]?.name || ''
      folder = ''
    }
    el.space.replaceChildren(
      ...list.map((s) => h('option', { value: s.name, selected: s.name === space }, s.access === 'owner' ? s.name : `${s.name} (${s.access})`)),
    )
    el.space.value = space
  }

  function renderCrumbs() {
    const segs = folder ? folder.split('/') : []
    const items = [{ label: space || '…', path: '' }, ...segs.map((s, i) => ({ label: s, path: segs.slice(0, i + 1).join('/') }))]
    el.crumbs.replaceChildren(
      ...items.map((it, i) =>
        h('li', {},
          i === items.length - 1
            ? h('span', { 'aria-current': 'location', class: 'crumb-current', tabindex: '-1', id: 'files-here' }, it.label)
            : h('button', { type: 'button', class: 'btn-link crumb', onclick: () => go(it.path) }, it.label)),
      ),
    )
  }

  function go(path, { focus = true } = {}) {
    folder = joinPath(path)
    save()
    load().then(() => {
      if (focus) $('files-here')?.focus()
    })
  }

  // The row acted on may be gone: the focus goes to the current folder.
  function keepFocus() {
    if (!document.activeElement || document.activeElement === document.body) $('files-here')?.focus()
  }

  async function download(entry, button) {
    const path = joinPath(folder, entry.name)
    const label = button.textContent
    button.disabled = true
    button.textContent = 'Downloading…'
    alert.clear()
    try {
      const blob = await apiBlob(fileUrl(space, path))
      const url = URL.createObjectURL(blob)
      const a = h('a', { href: url, download: entry.name, hidden: true })
      document.body.append(a)
      a.click()
      a.remove()
      setTimeout(() => URL.revokeObjectURL(url), 60_000)
    } catch (e) {
      alert.show(`Download of ${path} failed: ${errorText(e)}`)
    } finally {
      button.disabled = false
      button.textContent = label
    }
  }

  async function remove(entry) {
    const path = joinPath(folder, entry.name)
    const ok = await confirmDialog('Delete file', `Delete ${path} from space ${space}? This cannot be undone.`, { confirmLabel: 'Delete', danger: true })
    if (!ok) return
    alert.clear()
    try {
      await api('DELETE', fileUrl(space, path))
      announce(`Deleted ${path}.`)
    } catch (e) {
      alert.show(`Could not delete ${path}: ${errorText(e)}`)
    }
    await load()
    keepFocus()
  }

  async function move(entry) {
    const from = joinPath(folder, entry.name)
    const isFolder = entry.type === 'folder'
    const result = await formDialog({
      title: isFolder ? 'Rename or move folder' : 'Rename or move file',
      intro: isFolder
        ? `Every file below ${from}/ moves with it, keeping its place inside the folder.`
        : `The new path of ${from} in space ${space}.`,
      fields: [{ name: 'to', label: 'New path', value: from, required: true, hint: 'Folders in the path are created as needed.' }],
      submitLabel: 'Move',
      async submit({ to }) {
        const dest = joinPath(to)
        if (!dest) throw new Error('Enter the new path.')
        if (dest.split('/').includes('..')) throw new Error('The path may not contain "..".')
        if (dest === from) return null
        const r = await api('POST', `/v1/spaces/${encodeURIComponent(space)}/move`, { from, to: dest })
        return { dest, moved: r?.moved }
      },
    })
    if (!result) return
    pending.delete(`${space}\n${from}`)
    const n = result.moved
    announce(`Moved ${from} to ${result.dest}${n != null && isFolder ? ` (${n} file${n === 1 ? '' : 's'})` : ''}.`)
    await load()
    keepFocus()
  }

  function row(entry) {
    const path = joinPath(folder, entry.name)
    const write = canWrite()
    if (entry.type === 'folder') {
      return h('tr', { class: 'entry is-folder', dataset: { name: entry.name, type: 'folder', path } },
        h('td', { class: 'col-name' }, h('div', { class: 'name-cell' },
          h('button', { type: 'button', class: 'entry-open', onclick: () => go(path), 'aria-label': `Open folder ${entry.name}` },
            h('span', { class: 'icon-folder', 'aria-hidden': 'true' }), entry.name),
          entry.pending ? h('span', { class: 'badge badge-muted' }, 'new, empty') : null)),
        h('td', { class: 'col-size' }),
        h('td', { class: 'col-date' }),
        h('td', { class: 'col-sha' }),
        h('td', { class: 'col-actions' },
          write && !entry.pending
            ? h('button', { type: 'button', class: 'btn-small', 'data-action': 'move', 'aria-label': `Rename or move folder ${entry.name}`, onclick: () => move(entry) }, 'Move…')
            : null),
      )
    }
    const dl = h('button', { type: 'button', class: 'btn-small', 'data-action': 'download', 'aria-label': `Download ${entry.name}` }, 'Download')
    dl.addEventListener('click', () => download(entry, dl))
    return h('tr', { class: 'entry is-file', dataset: { name: entry.name, type: 'file', path, size: String(entry.size ?? ''), sha256: entry.sha256 || '' } },
      h('td', { class: 'col-name' }, h('div', { class: 'name-cell' }, h('span', { class: 'icon-file', 'aria-hidden': 'true' }), h('span', { class: 'entry-name' }, entry.name))),
      h('td', { class: 'col-size', title: entry.size != null ? `${entry.size.toLocaleString('en')} bytes` : '' }, formatBytes(entry.size)),
      h('td', { class: 'col-date', title: entry.created_at || '' }, formatDate(entry.created_at)),
      h('td', { class: 'col-sha' },
        entry.sha256
          ? [h('code', { class: 'sha', title: entry.sha256 }, `${entry.sha256.slice(0, 12)}…`), ' ',
            copyButton(entry.sha256, `Copy the SHA-256 of ${entry.name}`)]
          : null),
      h('td', { class: 'col-actions' },
        dl,
        write ? h('button', { type: 'button', class: 'btn-small', 'data-action': 'move', 'aria-label': `Rename or move ${entry.name}`, onclick: () => move(entry) }, 'Move…') : null,
        write ? h('button', { type: 'button', class: 'btn-small btn-small-danger', 'data-action': 'delete', 'aria-label': `Delete ${entry.name}`, onclick: () => remove(entry) }, 'Delete') : null),
    )
  }

  async function load() {
    if (!getMe()) return
    const seq = ++loadSeq
    renderSpaces()
    renderCrumbs()
    const write = canWrite()
    el.newFolder.disabled = !write
    el.uploadHere.disabled = !write
    el.table.setAttribute('aria-busy', 'true')
    let entries
    try {
      const r = await api('GET', listUrl(space, folder))
      entries = Array.isArray(r?.entries) ? r.entries : []
      alert.clear()
    } catch (e) {
      if (seq !== loadSeq) return
      el.table.removeAttribute('aria-busy')
      el.body.replaceChildren()
      el.empty.hidden = true
      el.note.hidden = true
      alert.show(`Could not list ${space}/${folder}: ${errorText(e)}`)
      return
    }
    if (seq !== loadSeq) return
    // A pending folder that now has files is a real one.
    if (entries.length) pending.delete(`${space}\n${folder}`)
    for (const key of pending) {
      const [s, p] = key.split('\n')
      if (s === space && parentOf(p) === folder && !entries.some((e) => e.name === baseName(p))) {
        entries.unshift({ name: baseName(p), type: 'folder', pending: true })
      }
    }
    el.table.removeAttribute('aria-busy')
    el.body.replaceChildren(...entries.map(row))
    el.table.hidden = entries.length === 0
    el.empty.hidden = entries.length > 0
    el.empty.textContent = folder ? 'This folder is empty.' : 'No files in this space yet.'
    const isPending = pending.has(`${space}\n${folder}`)
    el.note.hidden = !isPending
  }

  el.space.addEventListener('change', () => {
    space = el.space.value
    folder = ''
    save()
    load()
  })
  el.refresh.addEventListener('click', () => load())
  el.uploadHere.addEventListener('click', () => uploadHere(space, folder))
  el.newFolder.addEventListener('click', async () => {
    const name = await formDialog({
      title: 'New folder',
      intro: `A folder inside ${space}/${folder ? `${folder}/` : ''}. Ferry keeps folders only through the files in them: it exists once a file is uploaded into it.`,
      fields: [{ name: 'name', label: 'Folder name', required: true, placeholder: 'e.g. reports' }],
      submitLabel: 'Create',
      async submit({ name: n }) {
        const clean = joinPath(n)
        if (!clean) throw new Error('Enter a folder name.')
        if (clean.split('/').includes('..')) throw new Error('The name may not contain "..".')
        return clean
      },
    })
    if (!name) return
    const path = joinPath(folder, name)
    // Every level of a nested name is pending until a file arrives.
    const segs = path.split('/')
    for (let i = folder ? folder.split('/').length : 0; i < segs.length; i++) pending.add(`${space}\n${segs.slice(0, i + 1).join('/')}`)
    go(path)
  })

  return {
    // /v1/me again first: its `spaces` may have changed (Admin).
    show: async () => {
      await refreshMe()
      await load()
    },
    hide: () => {},
    place: () => ({ space, folder }),
  }
}
