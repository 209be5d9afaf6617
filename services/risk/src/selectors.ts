// Reads: assessments and rule versions, as the API answers them.
import { query, type Pool } from "./db.ts";
import { NotFound } from "./errors.ts";
import { idIsValid } from "./ids.ts";
import { cursorDecode, cursorEncode, type Page } from "./pagination.ts";
import * as q from "./queries.ts";
import type { Actor } from "./outbox.ts";
import type { Rules } from "./rules.ts";

export interface Reason {
  code: string;
  message: string;
  weight: number;
}

export interface Assessment {
  id: string;
  payment_id: string;
  score: number;
  decision: "allow" | "review" | "deny";
  reasons: Reason[];
  rules_version: number;
  assessed_at: string;
}

export interface RulesVersion {
  version: number;
  id: string;
  rules: Rules;
  created_at: string;
  created_by: Actor;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Row = Record<string, any>;

export function rowAssessment(row: Row): Assessment {
  return {
    id: row.id, payment_id: row.payment_id, score: row.score, decision: row.decision, reasons: row.reasons,
    rules_version: row.rules_version, assessed_at: row.assessed_at,
  };
}

export function rowRules(row: Row): RulesVersion {
  return { version: row.version, id: row.id, rules: row.rules, created_at: row.created_at, created_by: row.created_by };
}

export async function assessmentGet(pool: Pool, id: string): Promise<Assessment> {
  if (!idIsValid(id, "rsk")) throw new NotFound(`No assessment ${JSON.stringify(id).slice(0, 80)}.`);
  const row = (await query(pool, q.ASSESSMENT_GET, [id])).rows[0];
  if (!row) throw new NotFound(`No assessment ${id}.`);
  return rowAssessment(row);
}

export async function assessmentsPage(
  pool: Pool,
  filters: { payment_id?: string; decision?: string },
  cursor: string | undefined,
  limit: number,
): Promise<Page<Assessment>> {
  const position = cursor ? cursorDecode(cursor, ["id"]) : null;
  const args = [filters.payment_id ?? null, filters.decision ?? null];
  if (position?.before) {
    const rows = (await query(pool, q.ASSESSMENTS_PAGE_BEFORE, [...args, position.values[0], limit + 1])).rows;
    const more = rows.length > limit;
    const page = rows.slice(0, limit).reverse().map(rowAssessment);
    return {
      results: page,
      next: page.length ? cursorEncode(false, [page[page.length - 1].id]) : null,
      previous: more ? cursorEncode(true, [page[0].id]) : null,
    };
  }
  const rows = (await query(pool, q.ASSESSMENTS_PAGE_AFTER, [...args, position ? position.values[0] : null, limit + 1])).rows;
  const more = rows.length > limit;
  const page = rows.slice(0, limit).map(rowAssessment);
  return {
    results: page,
    next: more ? cursorEncode(false, [page[page.length - 1].id]) : null,
    previous: position && page.length ? cursorEncode(true, [page[0].id]) : null,
  };
}

export async function rulesGet(pool: Pool): Promise<RulesVersion> {
  return rowRules((await query(pool, q.RULES_CURRENT)).rows[0]);
}

export async function rulesVersionsPage(pool: Pool, cursor: string | undefined, limit: number): Promise<Page<RulesVersion>> {
  const position = cursor ? cursorDecode(cursor, ["int"]) : null;
  if (position?.before) {
    const rows = (await query(pool, q.RULES_PAGE_BEFORE, [position.values[0], limit + 1])).rows;
    const more = rows.length > limit;
    const page = rows.slice(0, limit).reverse().map(rowRules);
    return {
      results: page,
      next: page.length ? cursorEncode(false, [page[page.length - 1].version]) : null,
      previous: more ? cursorEncode(true, [page[0].version]) : null,
    };
  }
  const rows = (await query(pool, q.RULES_PAGE_AFTER, [position ? position.values[0] : null, limit + 1])).rows;
  const more = rows.length > limit;
  const page = rows.slice(0, limit).map(rowRules);
  return {
    results: page,
    next: more ? cursorEncode(false, [page[page.length - 1].version]) : null,
    previous: position && page.length ? cursorEncode(true, [page[0].version]) : null,
  };
}
