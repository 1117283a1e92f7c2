// Types of scripts/import-layers.mjs for test/unit/import-layers.test.ts.
export interface LayerReport {
  files: number
  fileCycles: string[][]
  folderCycles: string[][]
  upward: string[]
  sideways: string[]
  unranked: string[]
  big: string[]
}
export const LAYERS: string[][]
export const BIG: number
export const BIG_CEILINGS: Record<string, number>
export function groupOf(file: string): string
export function importsOf(text: string): string[]
export function check(root: string, options?: { ceilings?: Record<string, number> }): LayerReport
export function violations(report: LayerReport): number
