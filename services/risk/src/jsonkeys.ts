// Duplicate keys in a JSON body: JSON leaves their meaning undefined and JSON.parse keeps the last silently, so the
// kit (services/kit/parsers.py) refuses them with 400 `duplicate_key`, naming the key and where it is. This is the
// same rule for the risk service: one pass over the text of a document JSON.parse has already accepted.

export interface DuplicateKey {
  key: string;
  /** JSON pointer of the object holding it ("" at the top level). */
  pointer: string;
  /** The field path as the kit writes it: `a.b[2].c`. */
  field: string;
}

interface Frame {
  keys: Set<string> | null; // an object's keys so far; null for an array
  key: string; // the object's current key
  index: number; // the array's current index
}

function pointerEscape(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** The first key some object of `text` (a valid JSON document) names twice, in document order; null if none. */
export function duplicateKey(text: string): DuplicateKey | null {
  const stack: Frame[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: find its end (a backslash escapes the next character)
      let j = i + 1;
      let escaped = false;
      while (j < text.length) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) {
          j += 2;
          escaped = true;
        } else if (d === 0x22) break;
        else j++;
      }
      if (expectKey) {
        const raw = text.slice(i, j + 1);
        const key = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        const frame = stack[stack.length - 1];
        if (frame.keys!.has(key)) {
          const parents = stack.slice(0, -1);
          const pointer = parents.map((f) => `/${f.keys ? pointerEscape(f.key) : f.index}`).join("");
          let field = "";
          for (const f of parents) field = f.keys ? (field ? `${field}.${f.key}` : f.key) : `${field}[${f.index}]`;
          return { key, pointer, field: field ? `${field}.${key}` : key };
        }
        frame.keys!.add(key);
        frame.key = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      stack.push({ keys: new Set(), key: "", index: 0 });
      expectKey = true;
    } else if (c === 0x5b) {
      stack.push({ keys: null, key: "", index: 0 });
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      const frame = stack[stack.length - 1];
      if (frame.keys) expectKey = true;
      else frame.index++;
    }
  }
  return null;
}
