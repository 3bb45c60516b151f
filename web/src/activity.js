// Activity (admins): this node's throughput and uploads in flight over the
// last 10 minutes, from GET /v1/admin/activity every 2 s, drawn as a small
// hand-written SVG chart.
import { api } from './api.js'
import { alertArea, errorText, formatBytes, h } from './ui.js'

const POLL_MS = 2000
const WINDOW_MS = 10 * 60 * 1000
const MiB = 1024 * 1024
const NS = 'http://www.w3.org/2000/svg'

// Chart geometry (viewBox units).
const W = 720
const H = 260
const M = { left: 58, right: 46, top: 14, bottom: 34 }
const PW = W - M.left - M.right
const PH = H - M.top - M.bottom

function s(tag, attrs, ...children) {
  const e = document.createElementNS(NS, tag)
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) e.setAttribute(k, String(v))
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}

// A round upper bound and a step giving 3–5 ticks: 0.7 → (1, 0.25).
function niceScale(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 }
  const p = 10 ** Math.floor(Math.log10(max))
  for (const m of [1, 2, 2.5, 5, 10]) {
    const top = m * p
    if (top >= max) {
      const step = top / (m === 2.5 ? 5 : 4)
      return { top, step }
    }
  }
  return { top: 10 * p, step: 2.5 * p }
}

const fmtRate = (bps) => `${formatBytes(Math.round(bps))}/s`
const fmtTick = (v) => String(+v.toFixed(v >= 10 ? 0 : 2))

// Samples → { points: [{t, bps, inflight}], latest, peak, inflight, committed }
export function summarize(data) {
  const interval = Math.max(1, Number(data?.interval_ms) || 1000)
  const samples = Array.isArray(data?.samples) ? data.samples : []
  const points = samples.map((x) => ({
    t: Number(x.t),
    bps: (Number(x.bytes_received) || 0) / (interval / 1000),
    inflight: Number(x.uploads_in_flight) || 0,
    committed: Number(x.files_committed) || 0,
  }))
  const last = points.slice(-5)
  const latest = last.length ? last.reduce((a, p) => a + p.bps, 0) / last.length : 0
  return {
    points,
    now: Number(data?.now) || (points.length ? points[points.length - 1].t : Date.now()),
    latest,
    peak: points.reduce((a, p) => Math.max(a, p.bps), 0),
    inflight: points.length ? points[points.length - 1].inflight : 0,
    committed: points.reduce((a, p) => a + p.committed, 0),
  }
}

function chart(sum) {
  const { points, now } = sum
  const t0 = now - WINDOW_MS
  const x = (t) => M.left + (PW * Math.max(0, Math.min(WINDOW_MS, t - t0))) / WINDOW_MS
  // The left axis in MiB/s, or in KiB/s while the peak is under 1 MiB/s.
  const unit = sum.peak >= MiB ? MiB : 1024
  const unitName = unit === MiB ? 'MiB/s' : 'KiB/s'
  const rate = niceScale(sum.peak / unit)
  const yRate = (bps) => M.top + PH - (PH * bps) / unit / rate.top
  const maxIn = Math.max(1, ...points.map((p) => p.inflight))
  const inTop = maxIn <= 4 ? maxIn : Math.ceil(maxIn / 4) * 4
  const yIn = (n) => M.top + PH - (PH * n) / inTop
  const base = M.top + PH

  const svg = s('svg', {
    id: 'activity-chart', class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', preserveAspectRatio: 'xMidYMid meet',
    'aria-label': `Throughput over the last 10 minutes: now ${fmtRate(sum.latest)}, peak ${fmtRate(sum.peak)}; ${sum.inflight} upload${sum.inflight === 1 ? '' : 's'} in flight.`,
    'data-latest-bps': Math.round(sum.latest), 'data-peak-bps': Math.round(sum.peak), 'data-points': points.length,
  })

  // Grid and left axis (MiB/s).
  for (let v = 0; v <= rate.top + 1e-9; v += rate.step) {
    const y = yRate(v * unit)
    svg.append(
      s('line', { class: 'chart-grid', x1: M.left, x2: M.left + PW, y1: y, y2: y }),
      s('text', { class: 'chart-tick', x: M.left - 8, y: y + 4, 'text-anchor': 'end' }, fmtTick(v)),
    )
  }
  svg.append(s('text', { class: 'chart-axis', x: 14, y: M.top + PH / 2, transform: `rotate(-90 14 ${M.top + PH / 2})`, 'text-anchor': 'middle' }, unitName))
  // Right axis (uploads in flight).
  const inStep = inTop <= 4 ? 1 : inTop / 4
  for (let n = 0; n <= inTop; n += inStep) {
    svg.append(s('text', { class: 'chart-tick chart-tick-inflight', x: M.left + PW + 8, y: yIn(n) + 4 }, String(n)))
  }
  svg.append(s('text', { class: 'chart-axis chart-axis-inflight', x: W - 8, y: M.top + PH / 2, transform: `rotate(90 ${W - 8} ${M.top + PH / 2})`, 'text-anchor': 'middle' }, 'uploads'))
  // Time axis: minutes before now.
  for (let m = 10; m >= 0; m -= 2) {
    const tx = x(now - m * 60_000)
    svg.append(
      s('line', { class: 'chart-grid chart-grid-v', x1: tx, x2: tx, y1: M.top, y2: base }),
      s('text', { class: 'chart-tick', x: tx, y: base + 18, 'text-anchor': m === 10 ? 'start' : m === 0 ? 'end' : 'middle' }, m === 0 ? 'now' : `−${m} min`),
    )
  }

  const shown = points.filter((p) => p.t >= t0)
  if (shown.length) {
    const line = shown.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${yRate(p.bps).toFixed(1)}`).join('')
    const area = `${line}L${x(shown[shown.length - 1].t).toFixed(1)},${base}L${x(shown[0].t).toFixed(1)},${base}Z`
    const inflight = shown.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${yIn(p.inflight).toFixed(1)}`).join('')
    svg.append(
      s('path', { class: 'chart-area', d: area }),
      s('path', { class: 'chart-line', d: line }),
      s('path', { class: 'chart-inflight', d: inflight }),
    )
  }
  svg.append(s('line', { class: 'chart-axis-line', x1: M.left, x2: M.left + PW, y1: base, y2: base }))
  return svg
}

export function createActivityView() {
  const $ = (id) => document.getElementById(id)
  const el = {
    rate: $('activity-rate'),
    inflight: $('activity-inflight'),
    committed: $('activity-committed'),
    peak: $('activity-peak'),
    chart: $('activity-chart-wrap'),
    updated: $('activity-updated'),
  }
  const alert = alertArea($('activity-alert'))
  let active = false
  let timer = null
  let loading = false

  async function load() {
    if (loading) return
    loading = true
    try {
      const data = await api('GET', '/v1/admin/activity')
      const sum = summarize(data)
      el.rate.textContent = fmtRate(sum.latest)
      el.rate.dataset.bps = String(Math.round(sum.latest))
      el.inflight.textContent = String(sum.inflight)
      el.committed.textContent = String(sum.committed)
      el.peak.textContent = fmtRate(sum.peak)
      el.chart.replaceChildren(chart(sum))
      el.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`
      alert.clear()
    } catch (e) {
      alert.show(`Could not read this node's activity: ${errorText(e)}`)
    } finally {
      loading = false
    }
  }

  const tick = () => {
    if (active && document.visibilityState === 'visible') load()
  }
  document.addEventListener('visibilitychange', tick)
  if (!el.chart.firstChild) el.chart.append(h('p', { class: 'muted' }, 'Loading…'))

  return {
    show() {
      active = true
      load()
      clearInterval(timer)
      timer = setInterval(tick, POLL_MS)
    },
    hide() {
      active = false
      clearInterval(timer)
      timer = null
    },
  }
}
