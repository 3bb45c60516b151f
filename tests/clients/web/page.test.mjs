// Ferry's upload page (GET /) in headless Chromium: a 40 MiB file and a folder
// of 20 small files are uploaded through the page with a throttled uplink,
// the page is reloaded midway, and the upload must resume (GoldenRetriever +
// tus HEAD) from the server's offset and land every byte.
//
//   FERRY_URL=http://127.0.0.1:PORT FERRY_TOKEN=fy_... node --test page.test.mjs
//
// Env: FERRY_URL, FERRY_TOKEN (a user token), CHROMIUM (default
// /usr/bin/chromium), ARTIFACTS (screenshots, default /tmp).
// Without FERRY_URL/FERRY_TOKEN the test is skipped.
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

import { chromium } from 'playwright-core'

const URL_ = (process.env.FERRY_URL || '').replace(/\/+$/, '')
const TOKEN = process.env.FERRY_TOKEN || ''
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const ARTIFACTS = process.env.ARTIFACTS || '/tmp'
const MiB = 1024 * 1024
const BIG = 40 * MiB
const SMALL_FILES = 20
const THROTTLE = 3 * MiB // bytes per second, upload
const FOLDER = 'web-test'

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function waitFor(what, fn, { timeout = 60_000, every = 100 } = {}) {
  const t0 = Date.now()
  let last
  for (;;) {
    last = await fn()
    if (last) return last
    if (Date.now() - t0 > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(every)
  }
}

// Summary of the Uppy state in the page.
const pageFiles = (page) =>
  page.evaluate(() =>
    window.ferry
      ? window.ferry.uppy.getFiles().map((f) => ({
          id: f.id,
          name: f.name,
          size: f.size,
          relativePath: f.meta.relativePath || null,
          path: f.meta.path || null,
          space: f.meta.space || null,
          uploadUrl: f.tus?.uploadUrl || null,
          bytesUploaded: f.progress.bytesUploaded || 0,
          uploadStarted: !!f.progress.uploadStarted,
          complete: !!f.progress.uploadComplete,
          error: f.error || null,
          isGhost: !!f.isGhost,
        }))
      : null,
  )

// Blobs GoldenRetriever holds in IndexedDB (uppy-blobs / files) for this Uppy.
const storedBlobs = (page) =>
  page.evaluate(
    () =>
      new Promise((resolve) => {
        const req = indexedDB.open('uppy-blobs')
        req.onerror = () => resolve(-1)
        req.onsuccess = () => {
          const db = req.result
          if (!db.objectStoreNames.contains('files')) {
            db.close()
            resolve(0)
            return
          }
          const c = db.transaction('files', 'readonly').objectStore('files').index('store').count('ferry')
          c.onsuccess = () => {
            resolve(c.result)
            db.close()
          }
          c.onerror = () => resolve(-1)
        }
      }),
  )

test('upload page: files and a folder, reload midway, resume, every byte lands', {
  skip: !URL_ || !TOKEN ? 'FERRY_URL/FERRY_TOKEN unset' : false,
  timeout: 300_000,
}, async () => {
  const me = await (await fetch(`${URL_}/v1/me`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json()
  const home = me.home_space
  assert.ok(home, 'GET /v1/me names a home_space')

  // Local files: unique names per run, so an earlier run's files (Ferry's
  // default conflict policy renames) cannot stand in for this run's.
  const run = crypto.randomBytes(4).toString('hex')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-web-'))
  const bigName = `big-${run}.bin`
  const bigFile = path.join(dir, bigName)
  fs.writeFileSync(bigFile, crypto.randomBytes(BIG))
  const folderName = `folder-${run}`
  const folderDir = path.join(dir, folderName)
  fs.mkdirSync(folderDir)
  const expected = new Map([[`${FOLDER}/${bigName}`, sha256(fs.readFileSync(bigFile))]])
  for (let i = 0; i < SMALL_FILES; i++) {
    const name = `small-${String(i).padStart(2, '0')}.bin`
    const data = crypto.randomBytes(1024 + crypto.randomInt(200 * 1024))
    fs.writeFileSync(path.join(folderDir, name), data)
    expected.set(`${FOLDER}/${folderName}/${name}`, sha256(data))
  }

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--metrics-recording-only',
      '--disable-default-apps', '--mute-audio'],
  })
  const problems = []
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 1100 } })
    const page = await context.newPage()
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console.error: ${m.text()}`)
    })
    // Every tus request the page makes, with what the server answered.
    const tus = []
    let reloadedAt = Infinity
    page.on('response', async (res) => {
      const req = res.request()
      if (!new URL(req.url()).pathname.startsWith('/tus/')) return
      tus.push({
        at: Date.now(),
        method: req.method(),
        url: req.url(),
        status: res.status(),
        offset: res.headers()['upload-offset'],
        location: res.headers().location,
        meta: req.headers()['upload-metadata'] || '',
      })
    })
    const cdp = await context.newCDPSession(page)
    await cdp.send('Network.enable')

    // 1. The link with the token: stored, fragment removed, user shown.
    await page.goto(`${URL_}/#token=${encodeURIComponent(TOKEN)}`)
    await page.waitForSelector('#who:not([hidden])')
    assert.equal(await page.evaluate(() => location.hash), '', 'token fragment removed from the address')
    assert.equal(await page.evaluate(() => localStorage.getItem('ferry.token')), TOKEN, 'token kept in localStorage')
    assert.equal(await page.textContent('#who-name'), me.user)
    assert.equal(await page.inputValue('#space'), home, 'space defaults to the home space')
    assert.equal(await page.title(), 'Ferry — upload')

    // 2. Destination folder, then a file through the Dashboard's file input
    // and a whole folder through its directory (webkitdirectory) input.
    await page.fill('#folder', FOLDER)
    await page.setInputFiles('input.uppy-Dashboard-input[name="files[]"]:not([webkitdirectory])', bigFile)
    // With files listed, the Dashboard shows its inputs again behind "Add more".
    await page.click('.uppy-DashboardContent-addMore')
    await page.setInputFiles('input.uppy-Dashboard-input[webkitdirectory]', folderDir)
    await waitFor('21 files in Uppy', async () => (await pageFiles(page)).length === SMALL_FILES + 1, { timeout: 20_000 })
    const added = await pageFiles(page)
    const big = added.find((f) => f.name === bigName)
    assert.ok(big, 'the big file is in Uppy')
    for (const f of added.filter((x) => x !== big)) {
      assert.equal(f.relativePath, `${folderName}/${f.name}`, 'folder files carry their relative path')
    }
    // GoldenRetriever must hold every blob before the reload can restore them.
    await waitFor('21 blobs in IndexedDB', async () => (await storedBlobs(page)) === SMALL_FILES + 1, { timeout: 30_000 })

    // 3. Throttled uplink, press Upload.
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: THROTTLE,
    })
    await page.click('.uppy-StatusBar-actionBtn--upload')

    // Metadata Ferry places the file with, fixed when Upload was pressed.
    const started = await waitFor('the upload to start', async () => {
      const files = await pageFiles(page)
      return files.every((f) => f.uploadStarted) && files
    }, { timeout: 10_000 })
    for (const f of started) {
      assert.equal(f.space, home)
      assert.equal(f.path, `${FOLDER}/${f.name === bigName ? bigName : f.relativePath}`)
    }

    // 4. Midway: the big file between 25 % and 70 %, with at least one 8 MiB
    // chunk acknowledged by the server (a PATCH answered with its
    // Upload-Offset), so there is something to resume from. (The test sends
    // no request of its own to the upload: a HEAD would take the upload over
    // from the page's running PATCH, as Ferry's lock hand-over does.)
    const bigUrlOf = (f) => new URL(f.uploadUrl, URL_).href
    const acked = (url) => Math.max(0, ...tus.filter((r) => r.method === 'PATCH' && r.url === url && r.status === 204).map((r) => Number(r.offset)))
    let mid
    await waitFor('the big file at 25–70 % with a chunk acknowledged', async () => {
      const f = (await pageFiles(page)).find((x) => x.name === bigName)
      const pct = f.bytesUploaded / f.size
      assert.ok(pct <= 0.7, `the big file went past 70 % (${(pct * 100).toFixed(0)} %) before the reload: throttling is not in effect`)
      if (pct >= 0.25 && f.uploadUrl && acked(bigUrlOf(f)) > 0) mid = f
      return !!mid
    }, { timeout: 60_000, every: 50 })
    const bigUrl = bigUrlOf(mid)
    const offsetBefore = acked(bigUrl)
    console.log(`midway: page says ${(100 * mid.bytesUploaded / mid.size).toFixed(0)} %, server acknowledged ${offsetBefore} of ${BIG} bytes`)
    await page.screenshot({ path: path.join(ARTIFACTS, 'ferry-web-midway.png'), fullPage: true })

    // 5. Reload (the running PATCH is cut), lift the throttling.
    reloadedAt = Date.now()
    await page.reload()
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
    })
    await page.waitForSelector('#who:not([hidden])')

    // 6. GoldenRetriever restores the files and the page resumes by itself.
    await waitFor('all 21 files complete after the reload', async () => {
      const files = await pageFiles(page)
      if (!files) return false
      const err = files.find((f) => f.error)
      assert.ok(!err, `upload error for ${err?.name}: ${err?.error}`)
      return files.length === SMALL_FILES + 1 && files.every((f) => f.complete)
    }, { timeout: 120_000, every: 250 })
    await waitFor('21 entries in #done', async () => (await page.locator('#done > li').count()) === SMALL_FILES + 1, { timeout: 10_000 })
    const listed = (await page.locator('#done > li').evaluateAll((lis) => lis.map((li) => li.dataset.path))).sort()
    assert.deepEqual(listed, [...expected.keys()].sort(), '#done lists every uploaded path')

    // 7. The big file did not start over: after the reload its upload was
    // continued at the same URL (HEAD answered an offset > 0, then PATCHes
    // from there) and no new upload was created for it.
    const after = tus.filter((r) => r.at >= reloadedAt)
    const bigB64 = Buffer.from(bigName).toString('base64')
    const heads = after.filter((r) => r.method === 'HEAD' && r.url === bigUrl)
    assert.ok(heads.length > 0, 'the page asked the server for the big upload\'s offset after the reload')
    assert.ok(Number(heads[0].offset) > 0, `HEAD after the reload answered Upload-Offset ${heads[0].offset}`)
    assert.ok(Number(heads[0].offset) >= offsetBefore, `no acknowledged byte was lost (${offsetBefore} acknowledged before the reload)`)
    const patches = after.filter((r) => r.method === 'PATCH' && r.url === bigUrl)
    assert.ok(patches.length > 0, 'the big upload was continued with PATCH at its old URL')
    const recreated = after.filter((r) => r.method === 'POST' && r.meta.includes(bigB64))
    assert.equal(recreated.length, 0, 'no new upload was created for the big file after the reload')
    console.log(`resumed: HEAD offset ${heads[0].offset}, ${patches.length} PATCH(es) after the reload`)
    for (const r of tus.filter((x) => x.status >= 400)) {
      console.log(`tus ${r.method} ${r.url} -> ${r.status} (${r.at < reloadedAt ? 'before' : 'after'} the reload, +${r.at - reloadedAt} ms)`)
    }

    await waitFor('the Dashboard to show completion', () => page.evaluate(() => window.ferry.uppy.getState().totalProgress === 100), { timeout: 10_000 })
    await page.screenshot({ path: path.join(ARTIFACTS, 'ferry-web.png'), fullPage: true })

    // 8. The server has every byte, at the path the page asked for.
    for (const [p, sum] of expected) {
      const url = `${URL_}/v1/spaces/${encodeURIComponent(home)}/files/${p.split('/').map(encodeURIComponent).join('/')}`
      const res = await fetch(url, { headers: { Authorization: `Bearer ${TOKEN}` } })
      assert.equal(res.status, 200, `GET ${p}`)
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), sum, `SHA-256 of ${p}`)
    }

    // The page itself logged no error (the aborted request of the reload is
    // the browser's, not the page's).
    assert.deepEqual(problems.filter((p) => !/ERR_ABORTED|net::ERR_/.test(p)), [], 'no page errors')
  } finally {
    await browser.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
