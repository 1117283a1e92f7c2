import type { Task } from '../../src/engine/task.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { file } from '../../src/resources/file.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { portAvailable, supportedTarget } from '../common/checks.js'
import { firewallResources } from '../common/firewall.js'
import { remoteClients } from '../common/topology.js'
import { renderRedisConf } from './templates.js'

export const redisTask: Task = {
  name: 'redis',
  title: 'Redis for Synapse replication (pub/sub between main process and workers)',
  before: (ctx) => [supportedTarget, portAvailable(ctx.host.vars.redis.port, ['redis-server', 'redis'], 'Redis')],
  resources(ctx) {
    const r = ctx.host.vars.redis
    // Loopback only, unless workers or Synapse on other hosts need it: then also the private address.
    const clients = remoteClients(ctx, 'redis')
    const bind = clients.length ? ['127.0.0.1', ctx.host.privateAddress] : ['127.0.0.1']
    const password = r.password ? ctx.secret(r.password).reveal() : undefined
    return [
      aptPackages({ packages: ['redis-server'], provides: { units: ['redis-server.service'], paths: ['/etc/redis'] } }),
      file({
        path: '/etc/redis/redis.conf',
        content: renderRedisConf(ctx.host.vars, bind, password),
        owner: 'redis',
        group: 'redis',
        mode: 0o640,
        sensitive: Boolean(password),
      }),
      service({ unit: 'redis-server.service', watch: ['/etc/redis/redis.conf', 'pkg:redis-server'] }),
      ...(clients.length
        ? firewallResources(
            'redis',
            r.port,
            clients.map((h) => h.privateAddress),
          )
        : []),
    ]
  },
  after(ctx) {
    const r = ctx.host.vars.redis
    const password = r.password ? ctx.secret(r.password).reveal() : ''
    return [
      {
        name: `redis answers PING on port ${r.port}`,
        async run(conn) {
          // REDISCLI_AUTH comes from stdin, never from the command line.
          const out = await conn.run(
            sh`read -r REDISCLI_AUTH; [ -n "$REDISCLI_AUTH" ] && export REDISCLI_AUTH; redis-cli -h 127.0.0.1 -p ${r.port} PING`,
            { stdin: `${password}\n`, allowFailure: true },
          )
          return out.stdout.trim() === 'PONG'
            ? { ok: true, detail: 'PONG' }
            : { ok: false, detail: `redis-cli PING said: ${(out.stdout + out.stderr).trim()}` }
        },
      },
    ]
  },
}
