# Tradewire engine image: the official Deno image, dependencies cached at build
# time, run as the image's non-root `deno` user.
FROM denoland/deno:2.9.6

WORKDIR /app

# Dependencies first (the npm packages pinned in deno.json and deno.lock), so
# this layer stays cached while only the source changes.
COPY deno.json deno.lock ./
RUN deno install --frozen

COPY . .
# The worker threads are loaded by URL at run time (`new Worker(new URL(...))`), which
# `deno cache main.ts` does not follow: cached by name, so `--cached-only` finds them.
RUN deno cache --frozen main.ts scripts/migrate.ts scripts/healthcheck.ts \
    actors/_batch_writer_thread.ts actors/_validator_thread.ts && chown -R deno:deno /app

USER deno

# Every interface, so that a published port reaches the engine: HTTP_HOST is the default of
# http.host (config/default.yaml reads it), so a config file (TRADEWIRE_CONFIG) or
# TRADEWIRE_HTTP__HOST still sets another; http.port's default is 8000. Without an API key (the
# development profile) the trading API answers only clients on a loopback address — those of a
# published port come from the container network's gateway — unless http.allow_keyless_remote
# (TRADEWIRE_HTTP__ALLOW_KEYLESS_REMOTE=true), for a port no one else reaches: compose.yaml sets
# it and publishes on 127.0.0.1 only. Anywhere else: TRADEWIRE_ENGINE__PROFILE=production and
# TRADEWIRE_HTTP__API_KEY_HASHES (`deno task hash-key` makes a key and its hash).
ENV HTTP_HOST=0.0.0.0
EXPOSE 8000

# Asks /api/health where the configuration says the engine listens (scripts/healthcheck.ts loads
# it as the engine does, from the files and the environment; not from flags added to CMD).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["deno", "run", "--allow-read", "--allow-env", "--allow-net", "--cached-only", \
    "scripts/healthcheck.ts"]

CMD ["deno", "run", "--allow-all", "--cached-only", "main.ts"]
