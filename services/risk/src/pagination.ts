// Cursor pagination exactly like services/kit/pagination.py: keyset pages, `?limit=` (1..200, default 50) and
// `?cursor=`, answered as {"next", "previous", "results"} where next/previous are full URLs or null. A cursor is
// base64url JSON `[before (0|1), [values…]]`; one this list did not give out is 400 `invalid_cursor`.
import { InvalidCursor } from "./errors.ts";
import { idIsValid } from "./ids.ts";

export const PAGE_SIZE = 50;
export const PAGE_SIZE_MAX = 200;
const CURSOR_MAX_CHARS = 500;

export interface Page<T> {
  results: T[];
  next: string | null;
  previous: string | null;
}

export type KeyKind = "id" | "int";

export function cursorEncode(before: boolean, values: (string | number)[]): string {
  return Buffer.from(JSON.stringify([before ? 1 : 0, values])).toString("base64url");
}

export function cursorDecode(cursor: string, kinds: KeyKind[]): { before: boolean; values: (string | number)[] } {
  const refuse = (): never => {
    throw new InvalidCursor("The cursor is not one this list gave out.");
  };
  if (cursor.length > CURSOR_MAX_CHARS || !/^[A-Za-z0-9_-]+={0,2}$/.test(cursor)) refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    return refuse();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || (parsed[0] !== 0 && parsed[0] !== 1) || !Array.isArray(parsed[1]) || parsed[1].length !== kinds.length) refuse();
  const [before, values] = parsed as [number, unknown[]];
  values.forEach((value, index) => {
    if (kinds[index] === "id" && !idIsValid(value)) refuse();
    if (kinds[index] === "int" && !(Number.isInteger(value) && (value as number) >= 0 && (value as number) < 2 ** 31)) refuse();
  });
  return { before: before === 1, values: values as (string | number)[] };
}

/** The page with `next`/`previous` as URLs: the request's own URL with its `cursor` replaced. */
export function pageEnvelope<T>(page: Page<T>, requestUrl: string): { next: string | null; previous: string | null; results: T[] } {
  const link = (cursor: string | null): string | null => {
    if (cursor === null) return null;
    const url = new URL(requestUrl);
    url.searchParams.set("cursor", cursor);
    return url.toString();
  };
  return { next: link(page.next), previous: link(page.previous), results: page.results };
}
