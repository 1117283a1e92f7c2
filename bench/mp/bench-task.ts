import { readFileSync } from 'node:fs'
import type { Task } from '../../src/engine/task.js'
import type { Role } from '../../src/inventory/types.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { command } from '../../src/resources/command.js'
import { directory, file } from '../../src/resources/file.js'
import { lineInFile } from '../../src/resources/line-in-file.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'

/** bench/workload.json: the same workload the Ansible playbook and the pyinfra deploy read. */
export interface Workload {
  dir: { path: string; mode: string }
  files: { path: string; mode: string; content: string }[]
  packages: string[]
  service: string
  line: { path: string; line: string; match: string }
  command: { name: string; run: string; creates: string }
}

export const BENCH_ROLE = 'bench' as Role

export function loadWorkload(path: string): Workload {
  return JSON.parse(readFileSync(path, 'utf8')) as Workload
}

/** The workload as a task module, through the public resource API only. */
export function benchTask(w: Workload): Task {
  return {
    name: BENCH_ROLE,
    title: 'bench workload',
    resources: () => [
      directory({ path: w.dir.path, mode: parseInt(w.dir.mode, 8) }),
      ...w.files.map((f) => file({ path: f.path, content: f.content, mode: parseInt(f.mode, 8) })),
      aptPackages({ packages: w.packages }),
      service({ unit: w.service }),
      lineInFile({ path: w.line.path, line: w.line.line, match: w.line.match }),
      // The workload's script is shell text shared with the Ansible and pyinfra runs (as their shell modules run it).
      command({ name: w.command.name, command: sh`sh -c ${w.command.run}`, creates: w.command.creates }),
    ],
  }
}
