/** `provision adopt`'s part of a run, handed to the engine (which knows no verb). */
import type { AdoptionHook } from '../../engine/host-run.js'
import { adoptionReport, adoptionTask } from './adopt-task.js'
import { analyzeHandBuilt } from './analyze.js'
import { handBuiltFiles } from './host-files.js'

export const adoptionHook: AdoptionHook = {
  facts: [handBuiltFiles],
  analyze(facts, host, inventoryFile) {
    const adoption = analyzeHandBuilt(facts.get(handBuiltFiles), host, inventoryFile)
    return {
      report: adoptionReport(adoption),
      refusals: adoption.refusals,
      adopted: adoption.adopted,
      secrets: adoption.secrets,
      task: (secrets, ownership, today) => adoptionTask(adoption, secrets, ownership, today),
    }
  },
}
