// Ferry's page: an API token, then a console in tabs. "Upload" is the
// uploader: a destination (space + folder) and an Uppy Dashboard that
// uploads over tus to this same origin; GoldenRetriever keeps the selected
// files in IndexedDB so a reload (or a crash) picks the uploads up again from
// the server's offset. "Files", "Sessions" and, for admins, "Admin" and
// "Activity" are in their own modules.
import Uppy from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import GoldenRetriever from '@uppy/golden-retriever'
import Tus from '@uppy/tus'

import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'
import './app.css'

import { authHeaders, getToken, onUnauthorized, setToken } from './api.js'
import { createActivityView } from './activity.js'
import { createAdminView } from './admin.js'
import { createFilesView } from './files.js'
import { createSessionsView } from './sessions.js'
import { formatBytes, joinPath } from './ui.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const TOKEN_KEY = 'ferry.token'
const DONE_KEY = 'ferry.done' // sessionStorage: survives a reload, not a closed tab
const DEST_KEY = 'ferry.dest' // sessionStorage: the destination fields, for a reload
const TAB_KEY = 'ferry.tab' // sessionStorage: the tab shown, for a reload
const DONE_MAX = 500
// Concurrent tus uploads: well under the browser's per-host connections and
// under the user's max_open_sessions (lowered once /v1/me has answered).
const TUS_LIMIT = 4

const $ = (id) => document.getElementById(id)
const el = {
  who: $('who'),
  whoName: $('who-name'),
  whoAdmin: $('who-admin'),
  whoQuota: $('who-quota'),
  quotaBar: $('quota-bar'),
  forget: $('forget'),
  signin: $('signin'),
  tokenForm: $('token-form'),
  tokenInput: $('token'),
  signinMsg: $('signin-msg'),
  notice: $('notice'),
  space: $('space'),
  folder: $('folder'),
  preview: $('dest-preview'),
  done: $('done'),
  doneCount: $('done-count'),
  doneEmpty: $('done-empty'),
  doneClear: $('done-clear'),
  tabs: $('tabs'),
  announce: $('announce'),
}

// ---------------------------------------------------------------- storage --

function store(kind, key, value) {
  try {
    if (value == null) kind.removeItem(key)
    else kind.setItem(key, value)
  } catch {
    // storage disabled (private mode, quota): the page still works without it
  }
}

function load(kind, key) {
  try {
    return kind.getItem(key)
  } catch {
    return null
  }
}

// ------------------------------------------------------------------ token --

setToken(load(localStorage, TOKEN_KEY) || '')
let me = null // the answer of GET /v1/me for `token`
let pendingResume = false // golden retriever restored uploads that wait for a token

function takeTokenFromFragment() {
  const hash = location.hash.replace(/^#/, '')
  if (!hash) return
  const params = new URLSearchParams(hash)
  const t = params.get('token')
  if (t == null) return
  params.delete('token')
  const rest = params.toString()
  history.replaceState(
    history.state,
    '',
    location.pathname + location.search + (rest ? `#${rest}` : ''),
  )
  if (t.trim()) {
    setToken(t.trim())
    store(localStorage, TOKEN_KEY, getToken())
  }
}

function forgetToken(message) {
  setToken('')
  me = null
  store(localStorage, TOKEN_KEY, null)
  el.space.value = '' // another token may be another user: back to its home space
  saveDest()
  showSignin(message || '')
}

async function signIn() {
  if (!getToken()) {
    showSignin('')
    return
  }
  setNotice('')
  let res
  try {
    res = await fetch('/v1/me', {
      headers: authHeaders(),
      cache: 'no-store',
      credentials: 'omit',
    })
  } catch {
    setNotice('Ferry could not be reached. Check your connection and try again.', true)
    return
  }
  if (res.status === 401 || res.status === 403) {
    forgetToken('That token was not accepted. It may be mistyped, expired or revoked — enter a valid token.')
    return
  }
  if (!res.ok) {
    setNotice(`Ferry answered ${res.status} when asked who you are. Try again in a moment.`, true)
    return
  }
  me = await res.json()
  showSignedIn()
  enterConsole()
  if (!el.space.value.trim()) el.space.value = me.home_space
  updatePreview()
  const tus = uppy.getPlugin('Tus')
  if (tus && me.max_open_sessions > 0) {
    tus.requests.limit = Math.max(1, Math.min(TUS_LIMIT, me.max_open_sessions))
  }
  maybeResume()
}

async function refreshMe() {
  if (!getToken() || !me) return
  try {
    const res = await fetch('/v1/me', { headers: authHeaders(), cache: 'no-store', credentials: 'omit' })
    if (res.ok) {
      me = await res.json()
      showSignedIn()
    }
  } catch {
    // quota display only
  }
}

// --------------------------------------------------------------------- UI --

function setNotice(text, isError) {
  el.notice.textContent = text
  el.notice.hidden = !text
  el.notice.classList.toggle('is-error', !!isError)
}

function showSignin(message) {
  el.who.hidden = true
  el.signin.hidden = false
  el.signinMsg.textContent = message
  el.signinMsg.hidden = !message
  document.body.classList.add('signed-out')
  setDashboardDisabled(true)
  el.tokenInput.value = ''
  el.tokenInput.focus()
  leaveConsole()
}

function showSignedIn() {
  el.signin.hidden = true
  el.who.hidden = false
  document.body.classList.remove('signed-out')
  el.whoName.textContent = me.user
  el.whoAdmin.hidden = !me.admin
  const used = me.used_bytes || 0
  if (me.quota_bytes) {
    const pct = Math.min(100, (100 * used) / me.quota_bytes)
    el.whoQuota.textContent = `${formatBytes(used)} of ${formatBytes(me.quota_bytes)} used`
    el.quotaBar.hidden = false
    el.quotaBar.firstElementChild.style.width = `${pct.toFixed(1)}%`
    el.quotaBar.classList.toggle('is-full', pct >= 90)
  } else {
    el.whoQuota.textContent = `${formatBytes(used)} used`
    el.quotaBar.hidden = true
  }
  setDashboardDisabled(false)
}

function setDashboardDisabled(disabled) {
  const dash = uppy.getPlugin('Dashboard')
  if (dash && dash.opts.disabled !== disabled) dash.setOptions({ disabled })
}

function destination() {
  return {
    space: el.space.value.trim(),
    folder: joinPath(el.folder.value.trim()),
  }
}

function saveDest() {
  store(sessionStorage, DEST_KEY, JSON.stringify({ space: el.space.value, folder: el.folder.value }))
}

function restoreDest() {
  try {
    const d = JSON.parse(load(sessionStorage, DEST_KEY) || 'null')
    if (d && typeof d === 'object') {
      el.space.value = typeof d.space === 'string' ? d.space : ''
      el.folder.value = typeof d.folder === 'string' ? d.folder : ''
    }
  } catch {
    // ignore a damaged entry
  }
}

function updatePreview() {
  const { space, folder } = destination()
  el.preview.textContent = `${space || '…'} / ${folder ? `${folder}/` : ''}…`
}

// ------------------------------------------------------------- done list --

let done = []
try {
  done = JSON.parse(load(sessionStorage, DONE_KEY) || '[]')
  if (!Array.isArray(done)) done = []
} catch {
  done = []
}

function renderDone() {
  el.done.replaceChildren(
    ...done.map((d) => {
      const li = document.createElement('li')
      li.dataset.path = d.path
      li.dataset.space = d.space
      const p = document.createElement('span')
      p.className = 'done-path'
      p.textContent = d.path
      const m = document.createElement('span')
      m.className = 'done-meta'
      m.textContent = `${d.space} · ${formatBytes(d.size)}`
      li.append(p, m)
      return li
    }),
  )
  el.doneCount.textContent = done.length ? String(done.length) : ''
  el.doneEmpty.hidden = done.length > 0
  el.doneClear.hidden = done.length === 0
}

function addDone(file) {
  if (!file || done.some((d) => d.id === file.id)) return
  done.push({
    id: file.id,
    path: file.meta.path || file.name,
    space: file.meta.space || '',
    size: file.size,
  })
  if (done.length > DONE_MAX) done = done.slice(-DONE_MAX)
  store(sessionStorage, DONE_KEY, JSON.stringify(done))
  renderDone()
}

// ------------------------------------------------------------------ Uppy --

const uppy = new Uppy({
  id: 'ferry',
  autoProceed: false,
  allowMultipleUploadBatches: true,
  // Destination metadata is fixed when the upload starts, so a folder
  // change made before pressing Upload is honoured.
  onBeforeUpload(files) {
    if (!getToken() || !me) {
      uppy.info('Enter your API token before uploading.', 'error', 5000)
      return false
    }
    const { space, folder } = destination()
    if (!space) {
      uppy.info('Choose a destination space.', 'error', 5000)
      el.space.focus()
      return false
    }
    if (folder.split('/').includes('..')) {
      uppy.info('The folder may not contain "..".', 'error', 5000)
      el.folder.focus()
      return false
    }
    const out = {}
    for (const [id, file] of Object.entries(files)) {
      if (file.progress.uploadStarted) {
        out[id] = file // already on its way: its upload was created with its own metadata
        continue
      }
      const rel = typeof file.meta.relativePath === 'string' && file.meta.relativePath ? file.meta.relativePath : file.name
      out[id] = {
        ...file,
        meta: {
          ...file.meta,
          filename: file.name,
          filetype: file.type || 'application/octet-stream',
          space,
          path: joinPath(folder, rel),
        },
      }
    }
    return out
  },
})

uppy
  .use(Dashboard, {
    inline: true,
    target: '#dashboard',
    width: '100%',
    height: 460,
    fileManagerSelectionType: 'both', // files and whole folders (drag and drop does both too)
    hideProgressDetails: false, // speed and time left in the status bar
    hidePauseResumeButton: false,
    hideRetryButton: false,
    hideCancelButton: false,
    proudlyDisplayPoweredByUppy: false,
    disabled: !getToken(),
    note: 'Files and whole folders. Uploads resume after a reload or a dropped connection.',
  })
  .use(Tus, {
    endpoint: '/tus/',
    headers: () => authHeaders(),
    chunkSize: 8 * MiB,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
    limit: TUS_LIMIT,
    // Only what Ferry reads to place a file (tus Upload-Metadata).
    allowedMetaFields: ['filename', 'filetype', 'path', 'space'],
  })
  .use(GoldenRetriever, {
    serviceWorker: false,
    // The blobs of selected files are kept in IndexedDB until uploaded, so
    // they come back after a reload; Uppy's defaults (10 MiB a file, 300 MiB
    // in all) are too small for real uploads.
    indexedDB: { maxFileSize: 4 * GiB, maxTotalSize: 8 * GiB },
  })

uppy.on('upload-success', (file) => addDone(uppy.getFile(file?.id) || file))

uppy.on('upload-error', (file, error, response) => {
  const status = response?.status ?? error?.originalResponse?.getStatus?.()
  if (status === 401) {
    forgetToken('Ferry no longer accepts that token (401). Enter a valid token, then press Retry.')
  }
})

uppy.on('complete', () => {
  refreshMe()
})

// After a reload, GoldenRetriever puts the selected files back (blobs from
// IndexedDB, tus upload URLs in the file state). Uploads that were running
// carry on by themselves: the tus plugin asks the server for its offset
// (HEAD) and continues from there.
uppy.on('restored', () => {
  const { recoveredState, files, currentUploads } = uppy.getState()
  if (!recoveredState) return
  const list = Object.values(files)
  for (const f of list) if (f.progress?.uploadComplete && !f.error) addDone(f)
  if (list.some((f) => f.isGhost)) {
    setNotice('Some files from your last visit could not be kept by the browser. Add them again to finish their upload.', false)
    return
  }
  if (Object.keys(currentUploads || {}).length === 0) return // never started: wait for Upload
  pendingResume = true
  maybeResume()
})

function maybeResume() {
  if (!pendingResume || !getToken() || !me) return
  pendingResume = false
  uppy.emit('restore-confirmed')
}

// --------------------------------------------------------------- console --

// Short confirmations of what an action did (a polite live region).
let announceTimer = null
function announce(text) {
  el.announce.textContent = text
  el.announce.hidden = !text
  clearTimeout(announceTimer)
  if (text) {
    announceTimer = setTimeout(() => {
      el.announce.hidden = true
    }, 8000)
  }
}

// "Upload here" in Files: the uploader's destination becomes that place.
function uploadHere(space, folder) {
  el.space.value = space
  el.folder.value = folder
  updatePreview()
  saveDest()
  selectTab('upload', { focus: true })
  announce(`Uploads now go to ${space} / ${folder ? `${folder}/` : ''}`)
}

const TABS = ['upload', 'files', 'sessions', 'admin', 'activity']
const ADMIN_TABS = new Set(['admin', 'activity'])
const tabOf = (name) => $(`tab-${name}`)
const panelOf = (name) => $(`view-${name}`)
const getMe = () => me
const views = {
  upload: { show() {}, hide() {} },
  files: createFilesView({ getMe, uploadHere, announce, refreshMe }),
  sessions: createSessionsView({ getMe, announce }),
  admin: createAdminView({ announce }),
  activity: createActivityView(),
}
let currentTab = 'upload'
let consoleOn = false

const availableTabs = () => (me ? TABS.filter((t) => me.admin || !ADMIN_TABS.has(t)) : ['upload'])

function selectTab(name, { focus = false } = {}) {
  if (!availableTabs().includes(name)) name = 'upload'
  if (name !== currentTab) views[currentTab].hide()
  currentTab = name
  for (const t of TABS) {
    const on = t === name
    tabOf(t).setAttribute('aria-selected', String(on))
    tabOf(t).tabIndex = on ? 0 : -1
    panelOf(t).hidden = !on
  }
  store(sessionStorage, TAB_KEY, name)
  if (focus) tabOf(name).focus()
  if (consoleOn) views[name].show()
}

// Signed in: the tabs appear (Admin and Activity for admins only) and the
// tab of before a reload comes back.
function enterConsole() {
  consoleOn = true
  el.tabs.hidden = false
  for (const t of ADMIN_TABS) tabOf(t).hidden = !me.admin
  selectTab(load(sessionStorage, TAB_KEY) || currentTab)
}

function leaveConsole() {
  if (!consoleOn) return
  views[currentTab].hide()
  consoleOn = false
  el.tabs.hidden = true
  selectTab('upload')
}

// Tabs: click, or arrow keys / Home / End move and select (WAI-ARIA tabs
// with automatic activation).
el.tabs.addEventListener('click', (ev) => {
  const tab = ev.target.closest('[role=tab]')
  if (tab) selectTab(tab.id.replace(/^tab-/, ''))
})
el.tabs.addEventListener('keydown', (ev) => {
  const list = availableTabs()
  const i = list.indexOf(currentTab)
  let next = null
  if (ev.key === 'ArrowRight') next = list[(i + 1) % list.length]
  else if (ev.key === 'ArrowLeft') next = list[(i - 1 + list.length) % list.length]
  else if (ev.key === 'Home') next = list[0]
  else if (ev.key === 'End') next = list[list.length - 1]
  if (next == null) return
  ev.preventDefault()
  selectTab(next, { focus: true })
})

onUnauthorized(() => forgetToken('Ferry no longer accepts that token (401). Enter a valid token.'))

// -------------------------------------------------------------- wiring --

el.tokenForm.addEventListener('submit', (ev) => {
  ev.preventDefault()
  const t = el.tokenInput.value.trim()
  if (!t) {
    el.signinMsg.textContent = 'Paste your API token first.'
    el.signinMsg.hidden = false
    return
  }
  setToken(t)
  store(localStorage, TOKEN_KEY, t)
  signIn()
})

el.forget.addEventListener('click', () => {
  forgetToken('Token forgotten. This browser no longer holds it.')
})

for (const input of [el.space, el.folder]) {
  input.addEventListener('input', () => {
    updatePreview()
    saveDest()
  })
}
el.doneClear.addEventListener('click', () => {
  done = []
  store(sessionStorage, DONE_KEY, null)
  renderDone()
})

// tus retries and, while the browser is offline, waits for it to be back:
// say so, rather than leave a frozen progress bar unexplained.
let offlineNotice = false
window.addEventListener('offline', () => {
  offlineNotice = true
  setNotice('You are offline. Uploads will carry on from where they stopped when the connection is back.', false)
})
window.addEventListener('online', () => {
  if (offlineNotice) setNotice('')
  offlineNotice = false
})

window.addEventListener('hashchange', () => {
  const before = getToken()
  takeTokenFromFragment()
  if (getToken() !== before) signIn()
})

window.ferry = { uppy }

takeTokenFromFragment()
restoreDest()
renderDone()
updatePreview()
signIn()
