/** Tradewire's release version, reported by `GET /` and in logs. */
export const VERSION = "0.1.0";
