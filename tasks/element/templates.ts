/**
 * Element Web's config.json (copied from config.sample.json in the guide, written whole here).
 * `default_server_config` has the shape of /.well-known/matrix/client; it must not be mixed with
 * `default_server_name` or `default_hs_url` (Element then refuses to load).
 */
import type { MatrixSettings } from '../../src/inventory/types.js'

export function renderElementConfig(vars: MatrixSettings): string {
  const config = {
    default_server_config: {
      'm.homeserver': {
        base_url: vars.publicBaseUrl.replace(/\/+$/, ''),
        // Display only: Element shows it on the login page.
        server_name: vars.serverName,
      },
    },
    disable_custom_urls: false,
    disable_guests: true,
    brand: 'Element',
    room_directory: { servers: [vars.serverName] },
  }
  return JSON.stringify(config, null, 2) + '\n'
}
