// Prefixed opaque ids (`rsk_…`, `rlv_…`, `evt_…`): the same scheme as services/kit/ids.py.
// `<prefix>_` + 26 Crockford base32 characters of a 48-bit millisecond timestamp and 80 random bits, so ids
// sort by creation time.
import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const PREFIX = /^[a-z]{2,8}$/;
const ID = /^[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}$/;
const MILLIS_MASK = (1n << 50n) - 1n;

export function idNew(prefix: string): string {
  if (!PREFIX.test(prefix)) throw new Error(`id prefix must be 2-8 lowercase letters, got ${prefix}`);
  const random = BigInt("0x" + randomBytes(10).toString("hex"));
  let value = ((BigInt(Date.now()) & MILLIS_MASK) << 80n) | random;
  const chars = new Array<string>(26);
  for (let i = 25; i >= 0; i--) {
    chars[i] = ALPHABET[Number(value & 31n)];
    value >>= 5n;
  }
  return `${prefix}_${chars.join("")}`;
}

export function idIsValid(value: unknown, prefix?: string): boolean {
  if (typeof value !== "string" || !ID.test(value)) return false;
  return prefix === undefined || value.startsWith(prefix + "_");
}
