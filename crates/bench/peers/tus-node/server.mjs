// The @tus/server peer for ferry-bench: file storage, one endpoint at
// /files, bound to 127.0.0.1 only. PORT and STORE_DIR come from the bench.
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const port = Number(process.env.PORT || 1080);
const directory = process.env.STORE_DIR || "./files";
const server = new Server({ path: "/files", datastore: new FileStore({ directory }) });
server.listen({ host: "127.0.0.1", port }, () => console.log(`listening on 127.0.0.1:${port}`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
