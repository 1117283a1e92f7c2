import { expect } from 'vitest'
import type { MatrixClient } from './matrix-client.js'

export interface RoutedFlow {
  alice: MatrixClient
  bob: MatrixClient
  serverName: string
  roomId: string
  /** A message alice sent to the room (bob's sync must see it, and bob's receipt names it). */
  sent: { eventId: string; body: string }
  /** Appended to each request's query string, so the serving process's log proves who answered. */
  marker: string
  /** Asserts that `worker`'s log has the marker and main's has not. */
  expectServedBy: (worker: string, marker: string) => Promise<void>
}

/**
 * The one-of-each set's stream writers and the media repository through Apache, each request proven
 * by the serving worker's log (typing, receipts, to-device, presence, push rules, account data, device
 * lists, user directory, media upload and download), then bob's /sync on the generic worker sees the
 * message, the typing, his receipt and the to-device message. Returns the uploaded media's id.
 */
export async function streamWriterAndMediaRoutes(f: RoutedFlow): Promise<string> {
  const { alice, bob, marker: m, expectServedBy } = f
  const room = encodeURIComponent(f.roomId)
  const user = (name: string) => encodeURIComponent(`@${name}:${f.serverName}`)
  const typing = await alice.call('PUT', `/_matrix/client/v3/rooms/${room}/typing/${user('alice')}?${m}-typing`, {
    typing: true,
    timeout: 20000,
  })
  expect(typing.status, typing.text).toBe(200)
  await expectServedBy('typing', `${m}-typing`)
  const receipt = await bob.call(
    'POST',
    `/_matrix/client/v3/rooms/${room}/receipt/m.read/${encodeURIComponent(f.sent.eventId)}?${m}-receipt`,
    {},
  )
  expect(receipt.status, receipt.text).toBe(200)
  await expectServedBy('receipts', `${m}-receipt`)
  const bobDevice = (await bob.call<{ device_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.device_id
  const toDevice = await alice.call('PUT', `/_matrix/client/v3/sendToDevice/m.probe.test/td-${m}?${m}-todevice`, {
    messages: { [`@bob:${f.serverName}`]: { [bobDevice]: { hello: m } } },
  })
  expect(toDevice.status, toDevice.text).toBe(200)
  await expectServedBy('to_device', `${m}-todevice`)
  const presence = await alice.call('PUT', `/_matrix/client/v3/presence/${user('alice')}/status?${m}-presence`, { presence: 'online' })
  expect(presence.status, presence.text).toBe(200)
  await expectServedBy('presence', `${m}-presence`)
  expect((await alice.call('GET', `/_matrix/client/v3/pushrules/?${m}-pushrules`)).status).toBe(200)
  await expectServedBy('push_rules', `${m}-pushrules`)
  const accountData = await alice.call('PUT', `/_matrix/client/v3/user/${user('alice')}/account_data/m.probe?${m}-accountdata`, { m })
  expect(accountData.status, accountData.text).toBe(200)
  await expectServedBy('account_data', `${m}-accountdata`)
  expect((await alice.call('POST', `/_matrix/client/v3/keys/upload?${m}-keys`, {})).status).toBe(200)
  await expectServedBy('device_lists', `${m}-keys`)
  expect((await alice.call('POST', `/_matrix/client/v3/user_directory/search?${m}-userdir`, { search_term: 'bob' })).status).toBe(200)
  await expectServedBy('user_dir', `${m}-userdir`)
  const upload = await alice.call<{ content_uri: string }>(
    'POST',
    `/_matrix/media/v3/upload?filename=a.txt&${m}-upload`,
    Buffer.from(`bytes-${m}`),
  )
  expect(upload.status, upload.text).toBe(200)
  await expectServedBy('media_repository', `${m}-upload`)
  const mediaId = upload.json.content_uri.replace('mxc://', '')
  const download = await alice.call('GET', `/_matrix/client/v1/media/download/${mediaId}?${m}-download`)
  expect(download.text).toBe(`bytes-${m}`)
  await expectServedBy('media_repository', `${m}-download`)
  const sync = await bob.call<{ to_device?: { events: { content: { hello?: string } }[] } }>(
    'GET',
    `/_matrix/client/v3/sync?timeout=0&${m}-sync`,
  )
  expect(sync.status).toBe(200)
  await expectServedBy('generic', `${m}-sync`)
  expect(sync.text).toContain(f.sent.body)
  expect(sync.text).toContain('m.typing')
  expect(sync.text).toContain('m.receipt')
  expect(sync.json.to_device?.events.map((e) => e.content.hello)).toContain(m)
  return mediaId
}
