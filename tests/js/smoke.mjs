// Smoke test: the official chromadb npm client against `indigo run`.
// usage: node smoke.mjs http://127.0.0.1:PORT
import { ChromaClient } from "chromadb";
import assert from "node:assert/strict";

const url = new URL(process.argv[2]);
const client = new ChromaClient({ host: url.hostname, port: Number(url.port), ssl: false });

assert.ok((await client.heartbeat()) > 0);
const col = await client.createCollection({
  name: "js-smoke",
  metadata: { source: "js" },
  embeddingFunction: null,
});
await col.add({
  ids: ["a", "b", "c"],
  embeddings: [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
  documents: ["apple pie", "banana split", "cherry tart"],
  metadatas: [{ kind: "pie", n: 1 }, { kind: "split", n: 2 }, { kind: "tart", n: 3 }],
});
assert.equal(await col.count(), 3);
const got = await col.get({ where: { n: { $gte: 2 } } });
assert.deepEqual(got.ids, ["b", "c"]);
const q = await col.query({ queryEmbeddings: [[0.9, 0.1, 0]], nResults: 2 });
assert.deepEqual(q.ids[0], ["a", "b"]);
assert.ok(Math.abs(q.distances[0][0] - 0.02) < 1e-5);
const doc = await col.get({ whereDocument: { $contains: "banana" } });
assert.deepEqual(doc.ids, ["b"]);
await col.update({ ids: ["a"], metadatas: [{ kind: "tart" }] });
await col.upsert({ ids: ["d"], embeddings: [[1, 1, 1]], documents: ["date loaf"] });
await col.delete({ where: { kind: "tart" } });
assert.deepEqual((await col.get()).ids, ["b", "d"]);
const again = await client.getCollection({ name: "js-smoke", embeddingFunction: null });
assert.equal(again.id, col.id);
assert.equal((await client.listCollections()).length, 1);
let failed = false;
try {
  await col.add({ ids: ["x"], embeddings: [[1, 2]] });
} catch (e) {
  failed = true;
}
assert.ok(failed, "a wrong dimension must be refused");
await client.deleteCollection({ name: "js-smoke" });
assert.equal((await client.listCollections()).length, 0);
console.log("js smoke test passed");
