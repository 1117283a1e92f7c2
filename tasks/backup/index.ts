import type { AfterCheck, Task } from '../../src/engine/task.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { Secret } from '../../src/core/secret.js'
import { sh } from '../../src/core/shell.js'
import { addressOf } from '../common/topology.js'
import {
  BACKUP_CONF_PATH,
  BACKUP_PGPASS_PATH,
  BACKUP_SCRIPT_PATH,
  BACKUP_TIMER,
  BACKUP_UNIT,
  renderBackupConf,
  renderBackupScript,
  renderBackupService,
  renderBackupTimer,
} from './templates.js'
import { STATE_DIR } from '../../src/synapse/paths.js'

/**
 * Scheduled backups for operators without a controller online: a systemd timer runs the same dump and
 * copy as `provision backup` into a directory on the host, keeps the newest `keep`, and refuses to start
 * when the free space would fall below `minFreeMiB`. Its last result is this task's after-check.
 */
export const backupTask: Task = {
  name: 'backup',
  title: 'scheduled backups on the host (systemd timer, retention, free-space check)',
  resources(ctx) {
    const v = ctx.host.vars
    const dbHost = v.postgres.host ?? ctx.host.name
    const remoteDatabase = dbHost === ctx.host.name ? undefined : { address: addressOf(ctx, dbHost) }
    const out: Resource[] = []
    if (remoteDatabase) {
      const password = ctx
        .secret(v.postgres.password)
        .reveal()
        .replace(/([:\\])/g, '\\$1')
      out.push(
        aptPackages({ packages: ['postgresql-client'], label: 'pg_dump for a database on another host' }),
        directory({ path: STATE_DIR, mode: 0o700 }),
        file({
          path: BACKUP_PGPASS_PATH,
          content: new Secret(
            `${remoteDatabase.address}:${v.postgres.port}:${v.postgres.database}:${v.postgres.user}:${password}\n`,
            'backup pgpass',
          ),
          mode: 0o600,
        }),
      )
    }
    out.push(
      directory({ path: '/etc/matrix-provision', mode: 0o755 }),
      directory({ path: '/usr/local/lib/matrix-provision', mode: 0o755 }),
      file({ path: BACKUP_CONF_PATH, content: renderBackupConf(v), mode: 0o644 }),
      file({ path: BACKUP_SCRIPT_PATH, content: renderBackupScript({ hostName: ctx.host.name, vars: v, remoteDatabase }), mode: 0o755 }),
      file({ path: `/etc/systemd/system/${BACKUP_UNIT}`, content: renderBackupService() }),
      file({ path: `/etc/systemd/system/${BACKUP_TIMER}`, content: renderBackupTimer(v.backup.onCalendar) }),
      // The service only runs when the timer fires: enabled and started is the timer, never the service.
      service({ unit: BACKUP_TIMER, watch: [`/etc/systemd/system/${BACKUP_TIMER}`] }),
    )
    return out
  },
  after(ctx) {
    const dir = ctx.host.vars.backup.directory
    const checks: AfterCheck[] = [
      {
        name: 'last scheduled backup succeeded',
        async run(conn) {
          const r = await conn.run(
            sh`systemctl is-active ${BACKUP_TIMER}; systemctl show -p Result -p ExecMainStatus -p ExecMainExitTimestampMonotonic ${BACKUP_UNIT}; systemctl show -p NextElapseUSecRealtime ${BACKUP_TIMER}; echo "newest=$(ls -1d ${dir}/${ctx.host.name}-*/ 2>/dev/null | sort | tail -n 1)"`,
          )
          const [timer] = r.stdout.split('\n')
          const prop = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(r.stdout)?.[1]?.trim() ?? ''
          if (timer?.trim() !== 'active')
            return { ok: false, detail: `${BACKUP_TIMER} is ${timer?.trim() || 'unknown'}: scheduled backups do not run` }
          if (prop('ExecMainExitTimestampMonotonic') === '0' || prop('ExecMainExitTimestampMonotonic') === '') {
            return { ok: true, detail: `no scheduled backup has run yet; next: ${prop('NextElapseUSecRealtime') || 'unknown'}` }
          }
          if (prop('Result') !== 'success') {
            return {
              ok: false,
              detail: `the last scheduled backup failed (${prop('Result')}, exit ${prop('ExecMainStatus')}): journalctl -u ${BACKUP_UNIT}`,
            }
          }
          return { ok: true, detail: `newest backup ${prop('newest') || '(none found)'}; next: ${prop('NextElapseUSecRealtime')}` }
        },
      },
    ]
    return checks
  },
}
