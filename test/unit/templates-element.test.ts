import { describe, expect, it } from 'vitest'
import { renderElementConfig } from '../../tasks/element/templates.js'
import { matrixSettings } from './fixtures/matrix-settings.js'
import type { ElementConfigJson } from './fixtures/rendered.js'

describe('renderElementConfig', () => {
  it('points Element at the homeserver through default_server_config only', () => {
    const config: unknown = JSON.parse(renderElementConfig(matrixSettings()))
    expect(config).toEqual({
      default_server_config: { 'm.homeserver': { base_url: 'https://matrix.example.org', server_name: 'example.org' } },
      disable_custom_urls: false,
      disable_guests: true,
      brand: 'Element',
      room_directory: { servers: ['example.org'] },
    })
    // Mixing these with default_server_config makes Element refuse to load.
    expect(config).not.toHaveProperty('default_hs_url')
    expect(config).not.toHaveProperty('default_server_name')
  })

  it('keeps hostile-looking values as JSON strings', () => {
    const publicBaseUrl = 'https://matrix.example.org/</script>"\u2028'
    const config = JSON.parse(renderElementConfig(matrixSettings({ publicBaseUrl }))) as ElementConfigJson
    expect(config.default_server_config['m.homeserver']!.base_url).toBe(publicBaseUrl)
  })
})
