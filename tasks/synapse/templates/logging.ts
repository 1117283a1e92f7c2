/** Synapse's Python logging configuration, per process. */
import type { RenderedFile } from '../../common/rendered-file.js'
import { SYNAPSE_CONFIG_DIR, SYNAPSE_GROUP, SYNAPSE_LOG_DIR, MAIN_PROCESS_LOG_NAME } from '../../../src/synapse/paths.js'
import { FILE_HEADER, renderYaml } from './yaml.js'

const LOG_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/

/** /etc/matrix-synapse/log.yaml for the main process, /etc/matrix-synapse/<worker>-log.yaml for a worker. */
export function logConfigPath(name: string): string {
  if (!LOG_NAME.test(name)) throw new Error(`log name must be lowercase letters, digits, "_" or "-", got ${JSON.stringify(name)}`)
  return name === MAIN_PROCESS_LOG_NAME ? `${SYNAPSE_CONFIG_DIR}/log.yaml` : `${SYNAPSE_CONFIG_DIR}/${name}-log.yaml`
}

export function logFilePath(name: string): string {
  logConfigPath(name)
  return `${SYNAPSE_LOG_DIR}/${name}.log`
}

/**
 * Python logging configuration: every record goes to stdout (journald adds the time and unit) and
 * to /var/log/matrix-synapse/<name>.log, unbuffered (Debian's default buffers INFO lines for up to
 * 5 s, which makes "is the request in the log yet" checks flaky). Request lines come from
 * synapse.access.http.<port> at INFO.
 */
export function renderLogConfig(name: string): RenderedFile {
  const config = {
    version: 1,
    formatters: {
      precise: { format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' },
      journal: { format: '%(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' },
    },
    handlers: {
      file: {
        class: 'logging.handlers.TimedRotatingFileHandler',
        formatter: 'precise',
        filename: logFilePath(name),
        when: 'midnight',
        backupCount: 3,
        encoding: 'utf8',
      },
      console: { class: 'logging.StreamHandler', formatter: 'journal', stream: 'ext://sys.stdout' },
    },
    loggers: {
      // Request lines ("Processed request ..."): the e2e tests look for them.
      'synapse.access.http': { level: 'INFO' },
      // DEBUG here would log access tokens.
      'synapse.storage.SQL': { level: 'INFO' },
    },
    root: { level: 'INFO', handlers: ['file', 'console'] },
    disable_existing_loggers: false,
  }
  return {
    path: logConfigPath(name),
    content: FILE_HEADER + `# Logging of ${name}: stdout (journald) and ${logFilePath(name)}.\n` + renderYaml(config),
    mode: 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive: false,
  }
}
