// Builds the upload page into ../crates/server/web/: index.html, app.js and
// app.css, self-contained and minified. The server embeds these three files
// (include_bytes!), so the Rust build never runs Node.
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import * as esbuild from 'esbuild'

const here = path.dirname(fileURLToPath(import.meta.url))
const out = path.resolve(here, '../crates/server/web')
await mkdir(out, { recursive: true })

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: 'src/app.js' },
  outdir: out,
  bundle: true,
  minify: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  define: { 'process.env.NODE_ENV': '"production"' },
  legalComments: 'none',
  banner: {
    js: '/* Ferry upload page. Bundles Uppy, tus-js-client, Preact and their dependencies (MIT and similar licences; versions in web/package-lock.json). */',
    css: '/* Ferry upload page. Includes Uppy\'s stylesheets (MIT). */',
  },
  charset: 'utf8',
  sourcemap: false,
  write: true,
  metafile: true,
  logLevel: 'warning',
})

const written = Object.keys(result.metafile.outputs).map((f) => path.basename(f)).sort()
if (written.join(',') !== 'app.css,app.js') {
  throw new Error(`expected exactly app.js and app.css, esbuild wrote: ${written.join(', ')}`)
}

// index.html: the template with indentation and blank lines dropped.
const html = (await readFile(path.join(here, 'index.html'), 'utf8'))
  .split('\n')
  .map((l) => l.trim())
  .filter(Boolean)
  .join('\n')
await writeFile(path.join(out, 'index.html'), `${html}\n`)

for (const f of ['index.html', 'app.js', 'app.css']) {
  const { size } = await import('node:fs').then((fs) => fs.statSync(path.join(out, f)))
  console.log(`${path.relative(process.cwd(), path.join(out, f))}  ${(size / 1024).toFixed(1)} KiB`)
}
