// Ferry's tus endpoint driven by tus-js-client's Node build (node --test).
// Run by tests/clients/run.sh against a live `ferry serve` (contract:
// docs/TUS.md); it exports FERRY_URL, FERRY_TOKEN and FERRY_SPACE.

import assert from 'node:assert/strict'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import tus from 'tus-js-client'

const URL_ = (process.env.FERRY_URL || '').replace(/\/+$/, '')
const TOKEN = process.env.FERRY_TOKEN || ''
const SPACE = process.env.FERRY_SPACE || ''
const ENDPOINT = `${URL_}/tus/`
const MiB = 1024 * 1024
const configured = Boolean(URL_ && TOKEN && SPACE)
const skip = configured ? false : 'FERRY_URL/FERRY_TOKEN/FERRY_SPACE unset: run tests/clients/run.sh'

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')
const unique = (stem) => `node/${stem}-${randomUUID().slice(0, 8)}.bin`

/** SHA-256 of a file as Ferry's native API serves it. */
async function remoteSha256(path) {
  const enc = path.split('/').map(encodeURIComponent).join('/')
  const res = await fetch(`${URL_}/v1/spaces/${encodeURIComponent(SPACE)}/files/${enc}`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  })
  assert.equal(res.status, 200, `GET ${path}: ${res.status} ${await res.clone().text()}`)
  return sha256(Buffer.from(await res.arrayBuffer()))
}

/**
 * Runs one tus-js-client upload to its end. Resolves with the Upload and a log
 * of every request it made ({method, headers, status, responseHeaders}).
 */
function runUpload(input, options) {
  const log = []
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(input, {
      endpoint: ENDPOINT,
      headers: { Authorization: `Bearer ${TOKEN}` },
      retryDelays: [], // a failure is a test failure, not something to retry
      ...options,
      onBeforeRequest(req) {
        req._entry = {
          method: req.getMethod(),
          url: req.getURL(),
          concat: req.getHeader('Upload-Concat'),
          contentType: req.getHeader('Content-Type'),
        }
        log.push(req._entry)
      },
      onAfterResponse(req, res) {
        const e = req._entry
        e.status = res.getStatus()
        e.offset = res.getHeader('Upload-Offset')
      },
      onError: (err) => reject(Object.assign(err, { requests: log })),
      onSuccess: () => resolve({ upload, log }),
    })
    upload.start()
  })
}

let dir
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-node-tus-'))
})
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

test('parallelUploads: 4 partial uploads concatenated into one 24 MiB file (fs.ReadStream input)', { skip, timeout: 180_000 }, async () => {
  const data = randomBytes(24 * MiB + 12345)
  const file = join(dir, 'parallel.bin')
  await writeFile(file, data)
  const dest = unique('parallel')

  // A ReadStream with a path: tus-js-client's Node FileSource re-opens the
  // file per slice, which is what parallel uploads need.
  const { upload, log } = await runUpload(createReadStream(file), {
    parallelUploads: 4,
    metadata: { filename: dest.split('/').pop(), path: dest },
  })

  const partials = log.filter((r) => r.method === 'POST' && r.concat === 'partial')
  const finals = log.filter((r) => r.method === 'POST' && r.concat?.startsWith('final;'))
  assert.equal(partials.length, 4, 'four partial uploads were created')
  assert.ok(partials.every((r) => r.status === 201), JSON.stringify(partials))
  assert.equal(finals.length, 1, 'one final upload')
  assert.equal(finals[0].status, 201)
  assert.equal(finals[0].concat.split(' ').length, 4, 'the final names the four partials')
  assert.ok(upload.url?.startsWith(URL_), `final upload URL ${upload.url}`)

  assert.equal(await remoteSha256(dest), sha256(data))
})

test('uploadDataDuringCreation: first chunk in the POST, the rest by PATCH (Buffer input)', { skip, timeout: 120_000 }, async () => {
  const data = randomBytes(3 * MiB + 777)
  const dest = unique('with-creation')

  const { log } = await runUpload(data, {
    uploadDataDuringCreation: true,
    chunkSize: MiB,
    metadata: { filename: dest.split('/').pop(), path: dest },
  })

  const post = log.find((r) => r.method === 'POST')
  assert.equal(post.contentType, 'application/offset+octet-stream', 'the POST carried bytes')
  assert.equal(post.status, 201)
  assert.equal(post.offset, String(MiB), 'creation kept the first chunk')
  const patches = log.filter((r) => r.method === 'PATCH')
  assert.equal(patches.length, 3, 'three more chunks by PATCH')
  assert.ok(patches.every((r) => r.status === 204))
  assert.equal(patches.at(-1).offset, String(data.length))

  assert.equal(await remoteSha256(dest), sha256(data))
})

test('uploadDataDuringCreation: a small file in a single POST', { skip, timeout: 60_000 }, async () => {
  const data = randomBytes(300 * 1024)
  const dest = unique('one-post')

  const { log } = await runUpload(data, {
    uploadDataDuringCreation: true,
    metadata: { filename: dest.split('/').pop(), path: dest },
  })

  assert.deepEqual(log.map((r) => `${r.method} ${r.status}`), ['POST 201'])
  assert.equal(log[0].offset, String(data.length))
  assert.equal(await remoteSha256(dest), sha256(data))
})
