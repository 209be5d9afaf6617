// Writes: assessing payments and changing the rules. Each call is one transaction, with its audit events
// written to the outbox in that same transaction.
import { createHash } from "node:crypto";
import { transaction, type Pool, type Tx } from "./db.ts";
import { ValidationFailed, VersionMismatch } from "./errors.ts";
import { idNew } from "./ids.ts";
import { assessmentsTotal } from "./metrics.ts";
import { auditPutMany, outboxWritten, type AuditContext, type AuditEventInput } from "./outbox.ts";
import * as q from "./queries.ts";
import { canonicalJson, rulesChanges, rulesProblems, type Rules } from "./rules.ts";
import { rowAssessment, rowRules, type Assessment, type Reason, type RulesVersion } from "./selectors.ts";

export interface PaymentInput {
  payment_id: string;
  amount: number;
  currency: string;
  source_account: string;
  destination_account: string;
  client_id?: string;
  created_at?: string;
}

/** How far back the outlier rule looks at most: the source's latest payments in the lookback. */
export const OUTLIER_HISTORY_MAX = 1000;
/** How long the threshold of a source with a full history is reused (per process). */
export const OUTLIER_CACHE_MS = 10_000;
/** …once it has at least this many payments in the lookback (and min_history). */
export const OUTLIER_CACHE_MIN_HISTORY = 100;
const outlierCache = new Map<string, { count: number; threshold: number | null; until: number }>();
const RULES_LOCK = lockKey("rules", "risk");

function lockKey(kind: string, value: string): bigint {
  return createHash("sha256").update(`risk-${kind}:${value}`).digest().readBigInt64BE(0);
}

/** Transaction advisory locks on `keys`, always in ascending order (two callers never deadlock). */
async function locksTake(tx: Tx, keys: bigint[]): Promise<void> {
  const sorted = [...new Set(keys)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (sorted.length) await tx.query(q.LOCKS_TAKE, [sorted.map(String)]);
}

async function rulesCurrent(tx: Tx): Promise<RulesVersion> {
  return rowRules((await tx.query(q.RULES_CURRENT)).rows[0]);
}

interface Pending {
  input: PaymentInput;
  at: number; // created_at, ms
  order: number; // position in the request
}

interface Accepted {
  at: number;
  amount: bigint;
}

/**
 * Assess `inputs` (1..1000) in one transaction and return the assessments in the request's order.
 *
 * A payment already assessed gets its stored assessment back and is not counted again. The others are
 * assessed in creation order, as if one after the other, each counting the ones before it that were not denied,
 * while holding a transaction advisory lock per source account, so concurrent calls for one source serialize.
 */
export async function assess(pool: Pool, inputs: PaymentInput[], context: AuditContext): Promise<Assessment[]> {
  const now = Date.now();
  const unique = new Map<string, Pending>();
  inputs.forEach((input, order) => {
    if (!unique.has(input.payment_id)) {
      unique.set(input.payment_id, { input, at: input.created_at ? Date.parse(input.created_at) : now, order });
    }
  });
  const decisions: string[] = [];
  const byPayment = await transaction(pool, async (tx) => {
    await locksTake(tx, [...new Set([...unique.values()].map((p) => p.input.source_account))].map((s) => lockKey("source", s)));
    const found = new Map<string, Assessment>();
    for (const row of (await tx.query(q.ASSESSMENTS_BY_PAYMENT, [[...unique.keys()]])).rows) found.set(row.payment_id, rowAssessment(row));
    const fresh = [...unique.values()].filter((p) => !found.has(p.input.payment_id));
    if (fresh.length === 0) return found;
    fresh.sort((a, b) => a.at - b.at || a.order - b.order);
    const current = await rulesCurrent(tx);
    const decided = await decide(tx, current, fresh);
    const inserted = await tx.query(q.ASSESSMENTS_INSERT, [
      decided.map((d) => d.id),
      fresh.map((p) => p.input.payment_id),
      fresh.map((p) => String(p.input.amount)),
      fresh.map((p) => p.input.currency),
      fresh.map((p) => p.input.source_account),
      fresh.map((p) => p.input.destination_account),
      fresh.map((p) => p.input.client_id ?? ""),
      fresh.map((p) => new Date(p.at).toISOString()),
      decided.map((d) => d.score),
      decided.map((d) => d.decision),
      decided.map((d) => JSON.stringify(d.reasons)),
      decided.map(() => current.version),
    ]);
    const assessedAt = new Map<string, string>(inserted.rows.map((r) => [r.payment_id, r.assessed_at]));
    const counted = fresh.filter((p, index) => decided[index].decision !== "deny" && assessedAt.has(p.input.payment_id));
    if (counted.length) {
      await tx.query(q.VELOCITY_ADD, [
        counted.map((p) => p.input.source_account),
        counted.map((p) => new Date(p.at).toISOString()),
        counted.map((p) => String(p.input.amount)),
      ]);
    }
    const events: AuditEventInput[] = [];
    fresh.forEach((p, index) => {
      const d = decided[index];
      const stamp = assessedAt.get(p.input.payment_id);
      if (stamp === undefined) return; // assessed meanwhile by a call for another source: read back below
      found.set(p.input.payment_id, {
        id: d.id, payment_id: p.input.payment_id, score: d.score, decision: d.decision, reasons: d.reasons,
        rules_version: current.version, assessed_at: stamp,
      });
      events.push({
        action: "risk.assessment.decided",
        object: { type: "payment", id: p.input.payment_id },
        metadata: { assessment_id: d.id, score: d.score, decision: d.decision, reasons: d.reasons.map((r) => r.code), rules_version: current.version },
      });
    });
    if (inserted.rows.length < fresh.length) {
      const missing = fresh.filter((p) => !assessedAt.has(p.input.payment_id)).map((p) => p.input.payment_id);
      for (const row of (await tx.query(q.ASSESSMENTS_BY_PAYMENT, [missing])).rows) found.set(row.payment_id, rowAssessment(row));
    }
    await auditPutMany(tx, context, events);
    for (const event of events) decisions.push(String(event.metadata?.decision));
    return found;
  });
  if (decisions.length) {
    outboxWritten.notify();
    for (const decision of decisions) assessmentsTotal.inc({ decision });
  }
  return inputs.map((input) => byPayment.get(input.payment_id) as Assessment);
}

interface Decided {
  id: string;
  score: number;
  decision: "allow" | "review" | "deny";
  reasons: Reason[];
}

/** The decisions for `fresh` (in creation order), from the history read in three set-based queries. */
async function decide(tx: Tx, current: RulesVersion, fresh: Pending[]): Promise<Decided[]> {
  const rules: Rules = current.rules;
  const sources = [...new Set(fresh.map((p) => p.input.source_account))];

  // Velocity: the history's count and sum after each payment's lower bound, per window.
  const velocity: { count: number; total: bigint }[][] = fresh.map(() => []);
  if (rules.velocity.length) {
    const bySlot = new Map<string, number>();
    const slotSources: string[] = [];
    const slotBounds: string[] = [];
    const slots: number[][] = fresh.map((p) =>
      rules.velocity.map((rule) => {
        const bound = new Date(p.at - rule.window_seconds * 1000).toISOString();
        const key = `${p.input.source_account}\u0000${bound}`;
        let slot = bySlot.get(key);
        if (slot === undefined) {
          slot = slotSources.length;
          bySlot.set(key, slot);
          slotSources.push(p.input.source_account);
          slotBounds.push(bound);
        }
        return slot;
      }),
    );
    const totals = new Array<{ count: number; total: bigint }>(slotSources.length);
    for (const row of (await tx.query(q.VELOCITY_TOTALS, [slotSources, slotBounds])).rows) {
      totals[row.i - 1] = { count: row.count, total: BigInt(row.total) };
    }
    slots.forEach((perRule, index) => {
      velocity[index] = perRule.map((slot) => totals[slot]);
    });
  }

  const seen = new Set<string>();
  if (rules.new_payee.enabled) {
    const result = await tx.query(q.PAYEES_SEEN, [fresh.map((p) => p.input.source_account), fresh.map((p) => p.input.destination_account)]);
    for (const row of result.rows) seen.add(`${row.source}\u0000${row.destination}`);
  }

  const outlier = new Map<string, { count: number; threshold: number | null }>();
  const o = rules.amount_outlier;
  if (o.enabled) {
    const now = Date.now();
    const missing: string[] = [];
    for (const source of sources) {
      const cached = outlierCache.get(`${o.percentile}|${o.lookback_days}|${source}`);
      if (cached && cached.until > now) outlier.set(source, cached);
      else missing.push(source);
    }
    if (missing.length) {
      const result = await tx.query(q.OUTLIER_STATS, [missing, o.percentile / 100, o.lookback_days, OUTLIER_HISTORY_MAX]);
      if (outlierCache.size > 100_000) outlierCache.clear();
      for (const row of result.rows) {
        outlier.set(row.source, { count: row.count, threshold: row.threshold });
        // A source with a long enough history keeps its threshold for a few seconds: a busy account's
        // percentile moves slowly, and reading up to 1000 of its payments for each call would not.
        if (row.count >= Math.max(o.min_history, OUTLIER_CACHE_MIN_HISTORY)) {
          outlierCache.set(`${o.percentile}|${o.lookback_days}|${row.source}`, { count: row.count, threshold: row.threshold, until: now + OUTLIER_CACHE_MS });
        }
      }
    }
  }

  // One after the other: the payments of this call that were not denied count for the ones after them.
  const accepted = new Map<string, Accepted[]>();
  return fresh.map((p, index) => {
    const { input } = p;
    const amount = BigInt(input.amount);
    const reasons: Reason[] = [];
    const earlier = accepted.get(input.source_account) ?? [];
    rules.velocity.forEach((rule, r) => {
      const bound = p.at - rule.window_seconds * 1000;
      let count = velocity[index][r].count + 1;
      let total = velocity[index][r].total + amount;
      for (const e of earlier) {
        if (e.at > bound) {
          count += 1;
          total += e.amount;
        }
      }
      if (rule.max_count !== null && count > rule.max_count) {
        reasons.push({ code: "velocity_count", message: `${count} payments from the source account in ${rule.window_seconds} s ("${rule.name}": at most ${rule.max_count}).`, weight: rule.weight });
      }
      if (rule.max_amount !== null && total > BigInt(rule.max_amount)) {
        reasons.push({ code: "velocity_amount", message: `${total} paid from the source account in ${rule.window_seconds} s ("${rule.name}": at most ${rule.max_amount}).`, weight: rule.weight });
      }
    });
    const pair = `${input.source_account}\u0000${input.destination_account}`;
    if (rules.new_payee.enabled && !seen.has(pair)) {
      reasons.push({ code: "new_payee", message: "The source account never paid this destination before.", weight: rules.new_payee.weight });
    }
    const history = outlier.get(input.source_account);
    if (o.enabled && history && history.count >= o.min_history && history.threshold !== null && input.amount > history.threshold) {
      reasons.push({ code: "amount_outlier", message: `The amount is above the p${o.percentile} (${Math.round(history.threshold)}) of the source's last ${history.count} payments.`, weight: o.weight });
    }
    const high = Object.hasOwn(rules.amount_high, input.currency) ? rules.amount_high[input.currency] : undefined;
    if (high && input.amount > high.amount) {
      reasons.push({ code: "amount_high", message: `The amount is above ${high.amount} ${input.currency}.`, weight: high.weight });
    }
    const score = Math.min(100, reasons.reduce((sum, reason) => sum + reason.weight, 0));
    const decision = score >= rules.thresholds.deny ? "deny" : score >= rules.thresholds.review ? "review" : "allow";
    if (decision !== "deny") {
      earlier.push({ at: p.at, amount });
      accepted.set(input.source_account, earlier);
      seen.add(pair);
    }
    return { id: idNew("rsk"), score, decision, reasons };
  });
}

/** The If-Match version: `"3"`, `W/"3"` or `3`; null when absent. */
export function ifMatchVersion(header: string | undefined): number | null {
  if (header === undefined || header.trim() === "" || header.trim() === "*") return null;
  const match = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/.exec(header);
  if (!match) throw new ValidationFailed("If-Match must be the rules version, e.g. \"3\".", { errors: [{ field: "If-Match", pointer: "#/", code: "invalid", detail: "Not a version." }] });
  return Number(match[1]);
}

/**
 * Replace the rules with `rules` (a new version), if `expected` (If-Match) is null or the current version.
 * The same rules as the current ones change nothing and return the current version.
 */
export async function rulesUpdate(pool: Pool, rules: Rules, expected: number | null, context: AuditContext): Promise<RulesVersion> {
  const problems = rulesProblems(rules);
  if (problems.length) throw new ValidationFailed("The rules are not consistent.", { errors: problems });
  let wrote = false;
  const result = await transaction(pool, async (tx) => {
    await locksTake(tx, [RULES_LOCK]);
    const current = await rulesCurrent(tx);
    if (expected !== null && expected !== current.version) {
      throw new VersionMismatch(`The rules are at version ${current.version}, not ${expected}: read them again.`, { extra: { current_version: current.version } });
    }
    if (canonicalJson(current.rules) === canonicalJson(rules)) return current;
    const row = (await tx.query(q.RULES_INSERT, [idNew("rlv"), current.version + 1, JSON.stringify(rules), JSON.stringify(context.actor)])).rows[0];
    const saved = rowRules(row);
    await auditPutMany(tx, context, [{
      action: "risk.rules.updated",
      object: { type: "risk_rules", id: "risk" },
      changes: rulesChanges(current.rules, rules),
      metadata: { version: saved.version, previous_version: current.version, rules_version_id: saved.id },
    }]);
    wrote = true;
    return saved;
  });
  if (wrote) outboxWritten.notify();
  return result;
}
