// Admin: users (limits, tokens, new user) and spaces (members, new space).
import { api, ApiError } from './api.js'
import {
  alertArea, confirmDialog, errorText, formDialog, formatBytes, formatDate, h, panelDialog, parseBytes,
  progressBar, secretDialog,
} from './ui.js'

const u = (name) => encodeURIComponent(name)

function bytesField(text, what) {
  const n = parseBytes(text)
  if (Number.isNaN(n) || (n != null && n < 0)) throw new Error(`${what}: write a size such as 10 GiB, 500 MiB or a number of bytes.`)
  return n
}

function countField(text, what) {
  if (!text) return null
  if (!/^\d+$/.test(text)) throw new Error(`${what}: a whole number, or empty for the server's default.`)
  return Number(text)
}

export function createAdminView({ announce }) {
  const $ = (id) => document.getElementById(id)
  const el = {
    usersTable: $('users-table'),
    usersBody: $('users-body'),
    spacesTable: $('spaces-table'),
    spacesBody: $('spaces-body'),
    userForm: $('new-user-form'),
    spaceForm: $('new-space-form'),
  }
  const alert = alertArea($('admin-alert'))
  let users = []
  let spaces = []

  // ------------------------------------------------------------- users --

  function quotaCell(user) {
    const used = user.used_bytes || 0
    if (user.quota_bytes == null) {
      return h('td', { class: 'col-quota' }, h('span', { class: 'quota-text' }, `${formatBytes(used)} used · server default`))
    }
    return h('td', { class: 'col-quota' },
      h('span', { class: 'quota-text' }, `${formatBytes(used)} of ${formatBytes(user.quota_bytes)}`),
      progressBar(used, user.quota_bytes, `${user.name}: quota used`))
  }

  function userRow(user) {
    return h('tr', { dataset: { user: user.name, quota: user.quota_bytes == null ? '' : String(user.quota_bytes) } },
      h('th', { scope: 'row' }, user.name, h('div', { class: 'muted small' }, `home: ${user.home_space}`)),
      h('td', {}, user.admin ? h('span', { class: 'badge' }, 'admin') : 'no'),
      quotaCell(user),
      h('td', { class: 'num' }, String(user.open_sessions ?? '')),
      h('td', { class: 'num' }, user.max_open_sessions == null ? 'default' : String(user.max_open_sessions)),
      h('td', { class: 'col-actions' },
        h('button', { type: 'button', class: 'btn-small', 'data-action': 'limits', 'aria-label': `Edit limits of ${user.name}`, onclick: () => editLimits(user) }, 'Edit limits'),
        h('button', { type: 'button', class: 'btn-small', 'data-action': 'tokens', 'aria-label': `Tokens of ${user.name}`, onclick: () => tokens(user) }, 'Tokens')),
    )
  }

  async function editLimits(user) {
    const saved = await formDialog({
      title: `Limits of ${user.name}`,
      fields: [
        { name: 'quota', label: 'Quota', value: user.quota_bytes == null ? '' : formatBytes(user.quota_bytes), placeholder: 'server default', hint: 'e.g. 10 GiB, 500 MiB; empty for the server default.' },
        { name: 'sessions', label: 'Max open sessions', value: user.max_open_sessions == null ? '' : String(user.max_open_sessions), placeholder: 'server default', hint: 'Empty for the server default.' },
      ],
      async submit({ quota, sessions }) {
        const body = {
          quota_bytes: bytesField(quota, 'Quota'),
          max_open_sessions: countField(sessions, 'Max open sessions'),
        }
        return api('PATCH', `/v1/admin/users/${u(user.name)}`, body)
      },
    })
    if (!saved) return
    announce(`Limits of ${user.name} saved.`)
    await loadUsers()
  }

  async function tokens(user) {
    const errBox = h('p', { class: 'alert', role: 'alert', hidden: true })
    const err = alertArea(errBox)
    const body = h('tbody')
    const table = h('table', { class: 'table tokens-table' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Token id'), h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      body)
    const empty = h('p', { class: 'muted', hidden: true }, 'No tokens.')
    const create = h('button', { type: 'button', class: 'btn', 'data-action': 'create-token' }, 'Create token')

    async function refresh() {
      try {
        const r = await api('GET', `/v1/admin/users/${u(user.name)}/tokens`)
        const list = Array.isArray(r?.tokens) ? r.tokens : []
        body.replaceChildren(...list.map((t) =>
          h('tr', { dataset: { tokenId: t.id, revoked: String(!!t.revoked) } },
            h('td', {}, h('code', { title: t.id }, t.id)),
            h('td', { title: t.created_at || '' }, formatDate(t.created_at)),
            h('td', {}, t.revoked ? h('span', { class: 'badge badge-muted' }, 'revoked') : 'active'),
            h('td', { class: 'col-actions' }, t.revoked ? null
              : h('button', { type: 'button', class: 'btn-small btn-small-danger', 'data-action': 'revoke', 'aria-label': `Revoke token ${t.id}`, onclick: () => revoke(t) }, 'Revoke')))))
        table.hidden = list.length === 0
        empty.hidden = list.length > 0
        err.clear()
      } catch (e) {
        err.show(`Could not list the tokens of ${user.name}: ${errorText(e)}`)
      }
    }
    async function revoke(t) {
      const ok = await confirmDialog('Revoke token', `Revoke token ${t.id} of ${user.name}? Clients using it are refused from now on.`, { confirmLabel: 'Revoke', danger: true })
      if (!ok) return
      try {
        await api('DELETE', `/v1/admin/tokens/${u(t.id)}`)
        announce(`Token ${t.id} revoked.`)
      } catch (e) {
        err.show(`Could not revoke ${t.id}: ${errorText(e)}`)
      }
      await refresh()
    }
    create.addEventListener('click', async () => {
      try {
        const r = await api('POST', `/v1/admin/users/${u(user.name)}/tokens`)
        await secretDialog(`New token for ${user.name}`, `Token ${r.id} — give it to ${user.name}:`, r.token)
      } catch (e) {
        err.show(`Could not create a token: ${errorText(e)}`)
      }
      await refresh()
      create.focus()
    })
    const { done } = panelDialog(`Tokens of ${user.name}`, [errBox, h('div', { class: 'table-wrap' }, table), empty, h('p', { class: 'panel-actions' }, create)])
    await refresh()
    await done
  }

  async function loadUsers() {
    try {
      const r = await api('GET', '/v1/admin/users')
      users = Array.isArray(r?.users) ? r.users : []
      users.sort((a, b) => a.name.localeCompare(b.name))
      el.usersBody.replaceChildren(...users.map(userRow))
    } catch (e) {
      alert.show(`Could not list users: ${errorText(e)}`)
    }
  }

  el.userForm.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = el.userForm.elements
    const name = f['new-user-name'].value.trim()
    try {
      if (!name) throw new Error('New user: enter a name.')
      const body = { name, admin: f['new-user-admin'].checked }
      const quota = bytesField(f['new-user-quota'].value, 'Quota')
      if (quota != null) body.quota_bytes = quota
      const max = countField(f['new-user-sessions'].value.trim(), 'Max open sessions')
      if (max != null) body.max_open_sessions = max
      const r = await api('POST', '/v1/admin/users', body)
      alert.clear()
      el.userForm.reset()
      await loadUsers()
      await secretDialog(`User ${r.name} created`, `Home space ${r.home_space}. The API token of ${r.name}:`, r.token)
      announce(`User ${r.name} created.`)
      await loadSpaces()
    } catch (e) {
      alert.show(errorText(e))
    }
  })

  // ------------------------------------------------------------ spaces --

  function memberChip(space, user, acc) {
    return h('li', { class: 'member', dataset: { member: user, access: acc } },
      h('span', {}, user), h('span', { class: 'badge badge-muted' }, acc),
      h('button', {
        type: 'button', class: 'chip-remove', 'data-action': 'remove-member', 'aria-label': `Remove ${user} from ${space.name}`,
        title: `Remove ${user}`, onclick: () => removeMember(space, user),
      }, '×'))
  }

  function spaceRow(space) {
    const members = Object.entries(space.members || {}).sort(([a], [b]) => a.localeCompare(b))
    return h('tr', { dataset: { space: space.name } },
      h('th', { scope: 'row' }, space.name),
      h('td', {}, space.owner || h('span', { class: 'muted' }, 'shared')),
      h('td', {}, members.length ? h('ul', { class: 'members' }, members.map(([user, acc]) => memberChip(space, user, acc))) : h('span', { class: 'muted' }, 'none')),
      h('td', { class: 'col-actions' },
        h('button', { type: 'button', class: 'btn-small', 'data-action': 'add-member', 'aria-label': `Add a member to ${space.name}`, onclick: () => addMember(space) }, 'Add member')),
    )
  }

  async function addMember(space) {
    const names = users.map((x) => x.name).filter((n) => n !== space.owner && !(n in (space.members || {})))
    const fields = [
      names.length
        ? { name: 'user', label: 'User', type: 'select', options: names.map((n) => ({ value: n, label: n })), value: names[0] }
        : { name: 'user', label: 'User', required: true },
      { name: 'access', label: 'Access', type: 'select', value: 'write', options: [{ value: 'read', label: 'read' }, { value: 'write', label: 'read and write' }] },
    ]
    const r = await formDialog({
      title: `Add a member to ${space.name}`,
      fields,
      submitLabel: 'Add',
      async submit({ user, access }) {
        if (!user) throw new Error('Choose a user.')
        return { user, res: await api('PUT', `/v1/admin/spaces/${u(space.name)}/members/${u(user)}`, { access }) }
      },
    })
    if (!r) return
    announce(`${r.user} added to ${space.name}.`)
    await loadSpaces()
  }

  async function removeMember(space, user) {
    const ok = await confirmDialog('Remove member', `Remove ${user} from space ${space.name}? They lose access to its files.`, { confirmLabel: 'Remove', danger: true })
    if (!ok) return
    try {
      await api('DELETE', `/v1/admin/spaces/${u(space.name)}/members/${u(user)}`)
      announce(`${user} removed from ${space.name}.`)
    } catch (e) {
      alert.show(`Could not remove ${user} from ${space.name}: ${errorText(e)}`)
    }
    await loadSpaces()
  }

  async function loadSpaces() {
    try {
      const r = await api('GET', '/v1/admin/spaces')
      spaces = Array.isArray(r?.spaces) ? r.spaces : []
      spaces.sort((a, b) => a.name.localeCompare(b.name))
      el.spacesBody.replaceChildren(...spaces.map(spaceRow))
    } catch (e) {
      alert.show(`Could not list spaces: ${errorText(e)}`)
    }
  }

  el.spaceForm.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const input = el.spaceForm.elements['new-space-name']
    const name = input.value.trim()
    try {
      if (!name) throw new Error('New space: enter a name.')
      await api('POST', '/v1/admin/spaces', { name, members: {} })
      alert.clear()
      el.spaceForm.reset()
      announce(`Space ${name} created.`)
      await loadSpaces()
    } catch (e) {
      alert.show(e instanceof ApiError ? `Could not create space ${name}: ${e.message}` : errorText(e))
    }
  })

  return {
    async show() {
      alert.clear()
      await Promise.all([loadUsers(), loadSpaces()])
    },
    hide() {},
  }
}
