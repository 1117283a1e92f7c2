/**
 * `docker run` flags of a container with systemd as PID 1, without --privileged: the sandbox's and the
 * bench's hosts (bench/lib/hosts.js imports this module as built into dist/src/ by `npm run build`).
 */
export const SYSTEMD_RUN_FLAGS: readonly string[] = [
  '--cap-add',
  'SYS_ADMIN',
  '--cap-add',
  'NET_ADMIN',
  '--security-opt',
  'seccomp=unconfined',
  '--security-opt',
  'apparmor=unconfined',
  '-v',
  '/sys/fs/cgroup:/sys/fs/cgroup:rw',
  '--tmpfs',
  '/run',
  '--tmpfs',
  '/run/lock',
  '--tmpfs',
  '/tmp',
]
