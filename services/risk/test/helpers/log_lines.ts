// A process that logs a few events through the service's own logger settings (loggerOptions(loadConfig()), as
// main.ts does) and exits at once: test/logformat.test.ts runs it with ATRIUM_LOG_FORMAT/ATRIUM_LOG_COLOR/ATRIUM_ENV
// and reads its stdout.
import Fastify from "fastify";
import { loggerOptions } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";

const app = Fastify({ logger: loggerOptions(loadConfig()) });
app.log.info({ slug: "risk", note: "two words", client_secret: "s3cret" }, "catalog.registered");
app.log.child({ request_id: "req_abc" }).warn({ events: 3 }, "outbox.relay_failed");
app.log.error({ err: new Error("boom") }, "risk.stop_failed");
process.exit(0); // the lines above must be on stdout already
