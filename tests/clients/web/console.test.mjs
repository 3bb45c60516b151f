// Ferry's console (the page at GET /: Files, Sessions, Admin, Activity) in
// headless Chromium, driven through its UI as an admin. The API is called
// only to set fixtures up and to check what the UI did.
//
//   FERRY_URL=http://127.0.0.1:PORT FERRY_TOKEN=<admin token> node --test console.test.mjs
//
// Env: FERRY_URL, FERRY_TOKEN (an ADMIN token; FERRY_ADMIN_TOKEN, when set,
// is used instead, so that run.sh's environment, where FERRY_TOKEN is a
// user's, works as is), CHROMIUM (default /usr/bin/chromium), ARTIFACTS
// (screenshots, default /tmp). Without FERRY_URL and a token it is skipped.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'

import { chromium } from 'playwright-core'

const URL_ = (process.env.FERRY_URL || '').replace(/\/+$/, '')
const TOKEN = process.env.FERRY_ADMIN_TOKEN || process.env.FERRY_TOKEN || ''
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const ARTIFACTS = process.env.ARTIFACTS || '/tmp'
const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const enc = (p) => p.split('/').map(encodeURIComponent).join('/')
const b64 = (s) => Buffer.from(s).toString('base64')

async function waitFor(what, fn, { timeout = 20_000, every = 100 } = {}) {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() - t0 > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(every)
  }
}

// ----------------------------------------------------------------- API --

async function call(method, p, { token = TOKEN, body, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${token}`, ...headers } }
  if (body !== undefined) {
    if (Buffer.isBuffer(body) || body instanceof Uint8Array) init.body = body
    else {
      init.body = JSON.stringify(body)
      init.headers['Content-Type'] = 'application/json'
    }
  }
  return fetch(`${URL_}${p}`, init)
}

async function json(method, p, opts) {
  const res = await call(method, p, opts)
  const text = await res.text()
  assert.ok(res.ok, `${method} ${p} answered ${res.status}: ${text}`)
  return text ? JSON.parse(text) : null
}

const fileUrl = (space, p) => `/v1/spaces/${encodeURIComponent(space)}/files/${enc(p)}`

// One-request upload (native API).
async function put(space, p, data, token = TOKEN) {
  const res = await call('PUT', fileUrl(space, p), { token, body: data, headers: { 'Content-Type': 'application/octet-stream' } })
  const text = await res.text()
  assert.equal(res.status, 201, `PUT ${space}/${p}: ${res.status} ${text}`)
  return JSON.parse(text)
}

const status = async (method, p, token = TOKEN) => (await call(method, p, { token })).status

// tus: create an upload of `length` bytes, return its absolute URL.
async function tusCreate(space, p, length, token = TOKEN) {
  const res = await call('POST', '/tus/', {
    token,
    headers: {
      'Tus-Resumable': '1.0.0',
      'Upload-Length': String(length),
      'Upload-Metadata': `space ${b64(space)},path ${b64(p)},filename ${b64(path.basename(p))}`,
    },
  })
  assert.equal(res.status, 201, `tus POST: ${res.status} ${await res.text()}`)
  return new URL(res.headers.get('location'), `${URL_}/tus/`).href
}

async function tusPatch(url, offset, data, token = TOKEN) {
  const res = await fetch(url, {
    method: 'PATCH',
    headers: {
      Authorization: `Bearer ${token}`,
      'Tus-Resumable': '1.0.0',
      'Upload-Offset': String(offset),
      'Content-Type': 'application/offset+octet-stream',
    },
    body: data,
  })
  assert.equal(res.status, 204, `tus PATCH at ${offset}: ${res.status} ${await res.text()}`)
  return Number(res.headers.get('upload-offset'))
}

const tusHead = async (url, token = TOKEN) =>
  (await fetch(url, { method: 'HEAD', headers: { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' } })).status

// --------------------------------------------------------------- page --

const shot = async (page, name) => {
  const p = path.join(ARTIFACTS, name)
  await page.screenshot({ path: p, fullPage: true })
  console.log(`screenshot: ${p}`)
}

async function openTab(page, name) {
  await page.click(`#tab-${name}`)
  await page.waitForSelector(`#view-${name}:not([hidden])`)
}

// Waits for the files table to show `folder` (breadcrumb) and be loaded.
async function inFolder(page, folder) {
  const want = folder.split('/').pop()
  await page.waitForFunction(
    (w) => document.getElementById('files-here')?.textContent === w && !document.getElementById('files-table').hasAttribute('aria-busy'),
    want,
  )
}

const row = (page, p) => page.locator(`#files-body tr[data-path="${p}"]`)

// The dialog on top, and its buttons.
const dialog = (page) => page.locator('dialog[open]').last()
async function confirm(page) {
  await dialog(page).locator('[data-confirm]').click()
  await page.waitForSelector('dialog[open]', { state: 'detached' }).catch(() => {})
}

test('console: files, admin, sessions and activity through the UI', {
  skip: !URL_ || !TOKEN ? 'FERRY_URL/FERRY_TOKEN unset' : false,
  timeout: 600_000,
}, async () => {
  const me = await json('GET', '/v1/me')
  assert.ok(me.admin, 'the token must be an admin\'s (FERRY_TOKEN or FERRY_ADMIN_TOKEN)')
  const home = me.home_space
  const run = crypto.randomBytes(4).toString('hex')
  const base = `console-${run}`

  // Fixtures: files in nested folders, each a one-request PUT.
  const files = new Map()
  const fixture = async (p, data) => {
    await put(home, p, data)
    files.set(p, data)
  }
  await fixture(`${base}/docs/report.bin`, crypto.randomBytes(300 * KiB + 17))
  await fixture(`${base}/docs/notes.txt`, Buffer.from(`notes of run ${run}\n`))
  await fixture(`${base}/docs/deep/inner.bin`, crypto.randomBytes(50 * KiB))
  await fixture(`${base}/photos/p1.bin`, crypto.randomBytes(20 * KiB))
  await fixture(`${base}/photos/p2.bin`, crypto.randomBytes(3 * KiB))
  await fixture(`${base}/top.txt`, Buffer.from('top\n'))

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--metrics-recording-only',
      '--disable-default-apps', '--mute-audio'],
  })
  const problems = []
  const background = []
  const cleanups = [] // what a failed run would leave behind
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, acceptDownloads: true })
    const page = await context.newPage()
    page.setDefaultTimeout(20_000)
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console.error: ${m.text()}`)
    })

    await page.goto(`${URL_}/#token=${encodeURIComponent(TOKEN)}`)
    await page.waitForSelector('#who:not([hidden])')
    await page.waitForSelector('#tabs:not([hidden])')
    for (const t of ['upload', 'files', 'sessions', 'admin', 'activity']) {
      assert.ok(await page.isVisible(`#tab-${t}`), `an admin sees the ${t} tab`)
    }
    assert.equal(await page.getAttribute('#tab-upload', 'aria-selected'), 'true', 'Upload is the first tab')
    assert.ok(await page.isVisible('#dashboard'), 'the uploader is there')

    // ------------------------------------------------ keyboard: tabs --
    // Tab from the top of the page reaches the tab list at the selected
    // tab (roving tabindex); the arrow keys move and select.
    await page.focus('a.brand')
    let focused = ''
    for (let i = 0; i < 10 && !focused.startsWith('tab-'); i++) {
      await page.keyboard.press('Tab')
      focused = await page.evaluate(() => (document.activeElement?.getAttribute('role') === 'tab' ? document.activeElement.id : ''))
    }
    assert.equal(focused, 'tab-upload', 'Tab reaches the tab list at the selected tab')
    await page.keyboard.press('ArrowRight')
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-files', 'ArrowRight moves the focus to Files')
    assert.equal(await page.getAttribute('#tab-files', 'aria-selected'), 'true')
    await page.waitForSelector('#view-files:not([hidden])')
    assert.ok(await page.isHidden('#view-upload'), 'the Upload panel is hidden')
    await page.keyboard.press('ArrowLeft')
    assert.equal(await page.getAttribute('#tab-upload', 'aria-selected'), 'true', 'ArrowLeft goes back')
    await page.keyboard.press('End')
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-activity', 'End: the last tab')
    await page.keyboard.press('Home')
    await page.keyboard.press('ArrowRight')
    assert.equal(await page.getAttribute('#tab-files', 'aria-selected'), 'true')

    // ------------------------------------------------------ Files --
    await inFolder(page, home)
    assert.equal(await page.inputValue('#files-space'), home, 'Files opens the home space')
    // Keyboard: Tab from the toolbar to the folder's row, Enter opens it.
    await page.focus('#files-refresh')
    const target = `#files-body tr[data-path="${base}"] button.entry-open`
    await page.waitForSelector(target)
    let reached = false
    for (let i = 0; i < 200 && !reached; i++) {
      await page.keyboard.press('Tab')
      reached = await page.evaluate((sel) => document.activeElement === document.querySelector(sel), target)
    }
    assert.ok(reached, 'Tab reaches the folder row')
    await page.keyboard.press('Enter')
    await inFolder(page, base)
    const crumbs = await page.locator('#files-crumbs li').allTextContents()
    assert.deepEqual(crumbs, [home, base], 'breadcrumb: space / folder')
    assert.deepEqual(await page.locator('#files-body tr').evaluateAll((rs) => rs.map((r) => `${r.dataset.type}:${r.dataset.name}`)),
      ['folder:docs', 'folder:photos', 'file:top.txt'], 'folders first, then files')

    await row(page, `${base}/docs`).locator('button.entry-open').click()
    await inFolder(page, `${base}/docs`)
    for (const name of ['report.bin', 'notes.txt']) {
      const p = `${base}/docs/${name}`
      const data = files.get(p)
      const r = row(page, p)
      assert.equal(await r.getAttribute('data-size'), String(data.length), `${name}: size`)
      assert.equal(await r.locator('.col-size').getAttribute('title'), `${data.length.toLocaleString('en')} bytes`, `${name}: exact size in the title`)
      assert.match(await r.locator('.col-size').textContent(), /^\d+(\.\d)? (B|KiB|MiB)$/, `${name}: human size`)
      const sum = sha256(data)
      assert.equal(await r.locator('code.sha').getAttribute('title'), sum, `${name}: full SHA-256 in the title`)
      assert.equal(await r.locator('code.sha').textContent(), `${sum.slice(0, 12)}…`, `${name}: short SHA-256`)
      assert.match(await r.locator('.col-date').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d$/, `${name}: date`)
    }
    assert.equal(await row(page, `${base}/docs/deep`).getAttribute('data-type'), 'folder')
    await shot(page, 'console-files.png')

    // Download: the bytes that arrive are the file's.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      row(page, `${base}/docs/report.bin`).locator('[data-action=download]').click(),
    ])
    assert.equal(download.suggestedFilename(), 'report.bin')
    const got = fs.readFileSync(await download.path())
    assert.equal(sha256(got), sha256(files.get(`${base}/docs/report.bin`)), 'downloaded bytes match')

    // Rename a file.
    await row(page, `${base}/docs/notes.txt`).locator('[data-action=move]').click()
    await dialog(page).locator('input[name=to]').fill(`${base}/docs/renamed.txt`)
    await dialog(page).locator('[data-submit]').click()
    await row(page, `${base}/docs/renamed.txt`).waitFor()
    assert.equal(await row(page, `${base}/docs/notes.txt`).count(), 0, 'the old name is gone from the list')
    assert.equal(await status('HEAD', fileUrl(home, `${base}/docs/renamed.txt`)), 200, 'API: the file is at its new path')
    assert.equal(await status('HEAD', fileUrl(home, `${base}/docs/notes.txt`)), 404, 'API: nothing at the old path')

    // Move a folder (breadcrumb back up first).
    await page.click(`#files-crumbs button:text-is("${base}")`)
    await inFolder(page, base)
    await row(page, `${base}/photos`).locator('[data-action=move]').click()
    await dialog(page).locator('input[name=to]').fill(`${base}/archive/photos`)
    await dialog(page).locator('[data-submit]').click()
    await row(page, `${base}/archive`).waitFor()
    assert.equal(await row(page, `${base}/photos`).count(), 0)
    for (const n of ['p1.bin', 'p2.bin']) {
      const res = await call('GET', fileUrl(home, `${base}/archive/photos/${n}`))
      assert.equal(res.status, 200, `API: ${n} moved with its folder`)
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), sha256(files.get(`${base}/photos/${n}`)))
      assert.equal(await status('HEAD', fileUrl(home, `${base}/photos/${n}`)), 404)
    }

    // Delete a file (with confirmation).
    await row(page, `${base}/top.txt`).locator('[data-action=delete]').click()
    assert.match(await dialog(page).textContent(), /top\.txt/)
    await confirm(page)
    await row(page, `${base}/top.txt`).waitFor({ state: 'detached' })
    assert.equal(await status('HEAD', fileUrl(home, `${base}/top.txt`)), 404, 'API: deleted')

    // New folder (client-side) and "Upload here".
    await page.click('#files-new-folder')
    await dialog(page).locator('input[name=name]').fill('fresh')
    await dialog(page).locator('[data-submit]').click()
    await inFolder(page, `${base}/fresh`)
    assert.ok(await page.isVisible('#files-note'), 'the new, empty folder is explained')
    await page.click('#files-upload-here')
    await page.waitForSelector('#view-upload:not([hidden])')
    assert.equal(await page.inputValue('#space'), home)
    assert.equal(await page.inputValue('#folder'), `${base}/fresh`, 'Upload here sets the folder')
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-upload')

    // ------------------------------------------------------ Admin --
    const user = `u${run}`
    await openTab(page, 'admin')
    await page.waitForSelector(`#users-body tr[data-user="${me.user}"]`)
    await page.fill('#new-user-name', user)
    await page.click('#new-user-form button[type=submit]')
    const token1 = await dialog(page).locator('input.secret').inputValue()
    assert.match(token1, /\S{16,}/, 'the new user\'s token is shown')
    await dialog(page).locator('button:text-is("Done")').click()
    const userMe = await json('GET', '/v1/me', { token: token1 })
    assert.equal(userMe.user, user, 'API: the shown token is the user\'s')
    const urow = page.locator(`#users-body tr[data-user="${user}"]`)
    await urow.waitFor()

    // Tokens: create one (shown once), revoke it.
    await urow.locator('[data-action=tokens]').click()
    const tokensDlg = dialog(page)
    await tokensDlg.locator('tr[data-token-id]').first().waitFor()
    const before = await tokensDlg.locator('tr[data-token-id]').evaluateAll((rs) => rs.map((r) => r.dataset.tokenId))
    await tokensDlg.locator('[data-action=create-token]').click()
    const token2 = await dialog(page).locator('input.secret').inputValue()
    await dialog(page).locator('button:text-is("Done")').click()
    assert.equal(await status('GET', '/v1/me', token2), 200, 'API: the new token works')
    const newId = await waitFor('the new token in the list', async () => {
      const ids = await tokensDlg.locator('tr[data-token-id]').evaluateAll((rs) => rs.map((r) => r.dataset.tokenId))
      return ids.find((id) => !before.includes(id))
    })
    await tokensDlg.locator(`tr[data-token-id="${newId}"] [data-action=revoke]`).click()
    await confirm(page)
    await waitFor('the token shown revoked', async () => {
      const r = tokensDlg.locator(`tr[data-token-id="${newId}"]`)
      return (await r.count()) === 0 || (await r.getAttribute('data-revoked')) === 'true'
    })
    assert.equal(await status('GET', '/v1/me', token2), 401, 'API: the revoked token gets 401')
    assert.equal(await status('GET', '/v1/me', token1), 200, 'API: the other token still works')
    await tokensDlg.locator('button:text-is("Close")').click()

    // Quota and max open sessions.
    await urow.locator('[data-action=limits]').click()
    await dialog(page).locator('input[name=quota]').fill('3 GiB')
    await dialog(page).locator('input[name=sessions]').fill('7')
    await dialog(page).locator('[data-submit]').click()
    await page.waitForSelector(`#users-body tr[data-user="${user}"][data-quota="${3 * GiB}"]`)
    assert.match(await urow.locator('.col-quota').textContent(), /of 3 GiB/, 'the quota is in the table')
    assert.equal(await urow.locator('td.num').nth(1).textContent(), '7')
    const listed = (await json('GET', '/v1/admin/users')).users.find((x) => x.name === user)
    assert.equal(listed.quota_bytes, 3 * GiB, 'API: quota set')
    assert.equal(listed.max_open_sessions, 7, 'API: max open sessions set')

    // A space, a member, write access, then removed.
    const space = `s${run}`
    await page.fill('#new-space-name', space)
    await page.click('#new-space-form button[type=submit]')
    const srow = page.locator(`#spaces-body tr[data-space="${space}"]`)
    await srow.waitFor()
    assert.equal(await status('PUT', fileUrl(space, 'x.txt'), token1), 403, 'API: not a member yet')
    await srow.locator('[data-action=add-member]').click()
    await dialog(page).locator('select[name=user]').selectOption(user)
    await dialog(page).locator('select[name=access]').selectOption('write')
    await dialog(page).locator('[data-submit]').click()
    await srow.locator(`li.member[data-member="${user}"][data-access="write"]`).waitFor()
    await put(space, 'from-member.txt', Buffer.from('hello'), token1)
    const mine = await json('GET', '/v1/me', { token: token1 })
    if (Array.isArray(mine.spaces)) {
      assert.ok(mine.spaces.some((x) => x.name === space && x.access === 'write'), 'API: /v1/me lists the space for the member')
    }
    await shot(page, 'console-admin.png')
    await srow.locator(`li.member[data-member="${user}"] [data-action=remove-member]`).click()
    await confirm(page)
    await srow.locator(`li.member[data-member="${user}"]`).waitFor({ state: 'detached' })
    assert.equal(await status('PUT', fileUrl(space, 'y.txt'), token1), 403, 'API: removed member may no longer write')

    // --------------------------------------------------- Sessions --
    // A tus upload left half done: 8 MiB announced, 4 MiB sent.
    const halfPath = `${base}/half.bin`
    const half = await tusCreate(home, halfPath, 8 * MiB)
    cleanups.push(() => call('DELETE', new URL(half).pathname, { headers: { 'Tus-Resumable': '1.0.0' } }))
    assert.equal(await tusPatch(half, 0, crypto.randomBytes(4 * MiB)), 4 * MiB)
    // And one of the other user, seen only with "all users".
    const theirsPath = `theirs-${run}.bin`
    const theirs = await tusCreate(userMe.home_space, theirsPath, 1 * MiB, token1)
    cleanups.push(() => call('DELETE', new URL(theirs).pathname, { token: token1, headers: { 'Tus-Resumable': '1.0.0' } }))
    await tusPatch(theirs, 0, crypto.randomBytes(256 * KiB), token1)

    await openTab(page, 'sessions')
    assert.ok(await page.isVisible('#sessions-all'), 'admins get "all users"')
    const up = page.locator(`#sessions-body li.upload[data-path="${halfPath}"]`)
    await up.waitFor()
    assert.equal(await up.locator('.missing').textContent(), '4 MiB–end', 'missing range, readable')
    assert.equal(await up.locator('[role=progressbar]').getAttribute('aria-valuenow'), '50')
    assert.match(await up.locator('.upload-bytes').textContent(), /4 MiB of 8 MiB \(50 %\)/)
    const theirsRow = page.locator(`#sessions-body li.upload[data-path="${theirsPath}"]`)
    assert.equal(await theirsRow.count(), 0, 'another user\'s session is not listed by default')
    await page.check('#sessions-all')
    await theirsRow.waitFor()
    const srowSess = page.locator('#sessions-body tr.session', { has: page.locator(`li.upload[data-path="${halfPath}"]`) })
    assert.equal(await srowSess.locator('td').nth(1).textContent(), me.user, 'owner')
    assert.equal(await srowSess.locator('td').nth(2).textContent(), home, 'space')
    assert.equal(await srowSess.locator('td').nth(3).textContent(), 'tus', 'dialect')
    assert.match(await srowSess.locator('td').nth(5).textContent(), /^in \d+/, 'expires: relative')
    await shot(page, 'console-sessions.png')
    // The list refreshes by itself (every 5 s).
    const stamp = await page.textContent('#sessions-updated')
    await waitFor('an automatic refresh', async () => (await page.textContent('#sessions-updated')) !== stamp, { timeout: 12_000, every: 250 })

    await srowSess.locator('[data-action=abort]').click()
    await confirm(page)
    await up.waitFor({ state: 'detached' })
    const gone = await tusHead(half)
    assert.ok(gone === 404 || gone === 410, `API: the aborted upload is gone (HEAD answered ${gone})`)

    // --------------------------------------------------- Activity --
    // A background upload: 64 MiB in one tus PATCH whose body trickles in
    // at ~8 MiB/s, so the node has a write in flight for ~8 s.
    const bgPath = `${base}/background.bin`
    const bgSize = 64 * MiB
    const bgData = crypto.randomBytes(bgSize)
    const bg = (async () => {
      const url = await tusCreate(home, bgPath, bgSize)
      const step = 256 * KiB
      let off = 0
      const body = new ReadableStream({
        async pull(ctl) {
          if (off >= bgSize) return ctl.close()
          await sleep(30)
          ctl.enqueue(bgData.subarray(off, off + step))
          off += step
        },
      })
      const res = await fetch(url, {
        method: 'PATCH',
        duplex: 'half',
        headers: {
          Authorization: `Bearer ${TOKEN}`,
          'Tus-Resumable': '1.0.0',
          'Upload-Offset': '0',
          'Content-Type': 'application/offset+octet-stream',
        },
        body,
      })
      assert.equal(res.status, 204, `background PATCH: ${res.status} ${await res.text()}`)
    })()
    background.push(bg)
    await openTab(page, 'activity')
    await page.waitForSelector('#activity-chart[role=img]')
    const peak = await waitFor('a nonzero throughput point', async () => {
      const v = Number(await page.getAttribute('#activity-chart', 'data-peak-bps'))
      return v > 0 && v
    }, { timeout: 30_000, every: 500 })
    await waitFor('the current throughput above zero', async () => Number(await page.getAttribute('#activity-rate', 'data-bps')) > 0, { timeout: 15_000, every: 250 })
    await waitFor('an upload in flight', async () => Number(await page.textContent('#activity-inflight')) >= 1, { timeout: 15_000, every: 250 })
    const label = await page.getAttribute('#activity-chart', 'aria-label')
    assert.match(label, /^Throughput .* now [\d.]+ (B|KiB|MiB|GiB)\/s, peak [\d.]+ (B|KiB|MiB|GiB)\/s; \d+ uploads? in flight\.$/, 'the chart is labelled with its values')
    assert.ok(await page.locator('#activity-chart path.chart-line').count(), 'a throughput line is drawn')
    assert.match(await page.locator('#activity-chart text.chart-axis').first().textContent(), /^(KiB|MiB)\/s$/, 'axis label: MiB/s (KiB/s under 1 MiB/s)')
    console.log(`activity: peak ${(peak / MiB).toFixed(2)} MiB/s; chart says "${label}"`)
    await sleep(4000) // a few more points in the picture
    await shot(page, 'console-activity.png')
    await bg
    const landed = await call('GET', fileUrl(home, bgPath))
    assert.equal(landed.status, 200, 'the background upload landed')
    assert.equal(sha256(Buffer.from(await landed.arrayBuffer())), sha256(bgData))

    assert.deepEqual(problems.filter((p) => !/net::ERR_|status of 40[134]/.test(p)), [], 'no page errors')
  } finally {
    await Promise.allSettled(background)
    await Promise.allSettled(cleanups.map((f) => f()))
    await browser.close()
  }
})
