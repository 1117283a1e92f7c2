import { createReadStream } from 'node:fs'
import { lstat, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'

/**
 * A streaming tar (POSIX ustar + pax headers for long names) of a local directory, so a whole
 * wheelhouse travels as ONE stream on one SSH channel into `tar -x` on the host. Dotfiles are
 * included (node-ssh's putDirectory skips them). Regular files, directories and symlinks only.
 */
export interface TarOptions {
  /** User and group names written into every entry (root's tar restores them by name). */
  owner: string
  group: string
  /** Mode of every file; default 0755 when the local file is executable by its owner, else 0644. */
  fileMode?: number
  /** Mode of every directory; default 0755. */
  dirMode?: number
}

const BLOCK = 512

function writeString(header: Buffer, value: string, offset: number, length: number): void {
  header.write(value, offset, Math.min(Buffer.byteLength(value), length), 'utf8')
}

function writeOctal(header: Buffer, value: number, offset: number, length: number): void {
  const text = value.toString(8).padStart(length - 1, '0')
  if (text.length > length - 1) throw new Error(`tar: value ${value} does not fit in ${length - 1} octal digits`)
  header.write(`${text}\0`, offset, length, 'ascii')
}

interface HeaderFields {
  name: string
  mode: number
  size: number
  mtime: number
  type: '0' | '2' | '5' | 'x'
  linkname?: string
  uname: string
  gname: string
}

function ustarHeader(f: HeaderFields): Buffer {
  const h = Buffer.alloc(BLOCK)
  writeString(h, f.name, 0, 100)
  writeOctal(h, f.mode & 0o7777, 100, 8)
  writeOctal(h, 0, 108, 8) // uid: the name decides
  writeOctal(h, 0, 116, 8) // gid
  writeOctal(h, f.size, 124, 12)
  writeOctal(h, Math.max(0, Math.floor(f.mtime)), 136, 12)
  h.fill(0x20, 148, 156) // checksum is computed with its own field as spaces
  h.write(f.type, 156, 1, 'ascii')
  if (f.linkname) writeString(h, f.linkname, 157, 100)
  h.write('ustar\0', 257, 6, 'ascii')
  h.write('00', 263, 2, 'ascii')
  writeString(h, f.uname, 265, 32)
  writeString(h, f.gname, 297, 32)
  let sum = 0
  for (const byte of h) sum += byte
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii')
  return h
}

function paxRecord(key: string, value: string): string {
  // "<length> <key>=<value>\n", where length counts itself.
  const body = ` ${key}=${value}\n`
  let length = Buffer.byteLength(body) + 1
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body)
  return `${length}${body}`
}

function padding(size: number): Buffer {
  const rest = size % BLOCK
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest)
}

const fitsUstar = (value: string, max: number) => Buffer.byteLength(value) < max && /^[\x20-\x7e]*$/.test(value)

/** Header blocks for one entry: a pax header first when a name or owner does not fit ustar. */
function headerBlocks(f: HeaderFields): Buffer[] {
  const records: string[] = []
  if (!fitsUstar(f.name, 100)) records.push(paxRecord('path', f.name))
  if (f.linkname !== undefined && !fitsUstar(f.linkname, 100)) records.push(paxRecord('linkpath', f.linkname))
  if (!fitsUstar(f.uname, 32)) records.push(paxRecord('uname', f.uname))
  if (!fitsUstar(f.gname, 32)) records.push(paxRecord('gname', f.gname))
  if (f.size > 0o77777777777) records.push(paxRecord('size', String(f.size)))
  const main = ustarHeader({ ...f, size: Math.min(f.size, 0o77777777777), name: f.name.slice(0, 99) })
  if (records.length === 0) return [main]
  const pax = Buffer.from(records.join(''), 'utf8')
  const paxHeader = ustarHeader({ name: 'PaxHeader', mode: 0o644, size: pax.length, mtime: f.mtime, type: 'x', uname: '', gname: '' })
  return [paxHeader, pax, padding(pax.length), main]
}

async function* entries(root: string, relative: string, options: TarOptions): AsyncGenerator<Buffer> {
  const dirents = await readdir(join(root, relative), { withFileTypes: true })
  dirents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  for (const dirent of dirents) {
    const name = relative ? `${relative}/${dirent.name}` : dirent.name
    const local = join(root, name)
    const st = await lstat(local)
    const common = { mtime: st.mtimeMs / 1000, uname: options.owner, gname: options.group }
    if (st.isDirectory()) {
      yield* headerBlocks({ ...common, name: `${name}/`, mode: options.dirMode ?? 0o755, size: 0, type: '5' })
      yield* entries(root, name, options)
    } else if (st.isSymbolicLink()) {
      yield* headerBlocks({ ...common, name, mode: 0o777, size: 0, type: '2', linkname: await readlink(local) })
    } else if (st.isFile()) {
      const mode = options.fileMode ?? (st.mode & 0o100 ? 0o755 : 0o644)
      yield* headerBlocks({ ...common, name, mode, size: st.size, type: '0' })
      let sent = 0
      for await (const chunk of createReadStream(local, { highWaterMark: 256 * 1024 })) {
        const buf = chunk as Buffer
        sent += buf.length
        if (sent > st.size) throw new Error(`${local} grew while it was being sent`)
        yield buf
      }
      if (sent !== st.size) throw new Error(`${local} shrank while it was being sent`)
      yield padding(st.size)
    } else {
      throw new Error(`${local} is not a regular file, directory or symlink: cannot send it`)
    }
  }
}

async function* archive(root: string, options: TarOptions): AsyncGenerator<Buffer> {
  yield* entries(root, '', options)
  yield Buffer.alloc(BLOCK * 2) // end of archive
}

/** The directory's contents (not the directory itself) as a tar byte stream. */
export function tarStream(localDir: string, options: TarOptions): Readable {
  return Readable.from(archive(localDir, options), { objectMode: false })
}
