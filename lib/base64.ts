/**
 * Bytes as base64 text (RFC 4648, standard alphabet, with padding), for
 * bytes that must travel as text: a signal body that is not UTF-8, an opaque
 * API cursor (made URL-safe by its caller).
 *
 * @example
 * ```ts
 * import { base64 } from "./base64.ts";
 *
 * base64(new Uint8Array([0xff, 0x00])); // "/wA="
 * ```
 *
 * @module
 */

/** `bytes` in base64 (RFC 4648, with padding). */
export function base64(bytes: Uint8Array): string {
  let binary = "";
  // In chunks: String.fromCharCode takes its arguments on the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
