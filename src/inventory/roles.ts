/**
 * The roles a host can have; each names the task module that runs on it (tasks/<role>/). Order = run order.
 * A module of its own, without zod: the CLI's --help lists them and must not load the schema.
 */
export const ROLES = ['apt-keyring', 'postgres', 'redis', 'synapse', 'workers', 'apache', 'mas', 'element', 'monitoring', 'backup'] as const
