/**
 * POSIX single-quote escaping for remote `sh` (dash or bash). Unlike shell-escape, it keeps empty
 * arguments, and unlike zx's quote it never emits bash-only $'…' syntax.
 */
export function shellQuote(value: string): string {
  if (value === '') return "''"
  if (/^[A-Za-z0-9_/.,:=@%+-]+$/.test(value)) return value
  return `'${value.replace(/'/g, `'\\''`)}'`
}

export function shellJoin(args: readonly string[]): string {
  return args.map(shellQuote).join(' ')
}
