/**
 * The JSON codec every NATS message uses.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes `value` as UTF-8 JSON bytes. */
export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Decodes UTF-8 JSON bytes; throws a `SyntaxError` naming the problem on bad input. */
export function decodeJson<T = unknown>(data: Uint8Array): T {
  return JSON.parse(decoder.decode(data)) as T;
}
