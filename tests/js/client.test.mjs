// The official chromadb npm client against a server: collections, every record
// operation with filters, the search API, and errors.
// usage: INDIGO_URL=http://127.0.0.1:PORT node --test client.test.mjs
import {
  ChromaClient,
  ChromaNotFoundError,
  ChromaUniqueError,
  K,
  Knn,
  Search,
} from "chromadb";
import assert from "node:assert/strict";
import { before, test } from "node:test";

const url = new URL(process.env.INDIGO_URL);
const client = new ChromaClient({ host: url.hostname, port: Number(url.port), ssl: false });
const noEf = { embeddingFunction: null };

// Four fruit in a 3-d space; metadata has strings, ints, floats, bools and lists.
const fruit = {
  ids: ["apple", "banana", "cherry", "date"],
  embeddings: [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [1, 1, 0],
  ],
  documents: ["a red apple pie", "a yellow banana split", "a red cherry tart", "a brown date loaf"],
  metadatas: [
    { color: "red", n: 1, price: 1.5, ripe: true, tags: ["pie", "baked"] },
    { color: "yellow", n: 2, price: 0.5, ripe: false, tags: ["split"] },
    { color: "red", n: 3, price: 3.0, ripe: true, tags: ["tart", "baked"] },
    { color: "brown", n: 4, price: 2.0, ripe: true, tags: ["loaf"] },
  ],
};

async function fresh(name, extra = {}) {
  try {
    await client.deleteCollection({ name });
  } catch (e) {
    if (!(e instanceof ChromaNotFoundError)) throw e;
  }
  const c = await client.createCollection({ name, ...noEf, ...extra });
  await c.add(fruit);
  return c;
}

async function rejects(promise, check) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, "expected an error");
  check(err);
}

before(async () => {
  assert.ok((await client.heartbeat()) > 0);
});

test("collections: create, get, list, count, modify, delete", async () => {
  const c = await fresh("js-coll", { metadata: { owner: "js", v: 1 } });
  assert.equal(c.name, "js-coll");
  assert.deepEqual(c.metadata, { owner: "js", v: 1 });
  const same = await client.getOrCreateCollection({ name: "js-coll", ...noEf });
  assert.equal(same.id, c.id);
  const byName = await client.getCollection({ name: "js-coll", ...noEf });
  assert.equal(byName.id, c.id);
  const names = (await client.listCollections()).map((x) => x.name);
  assert.ok(names.includes("js-coll"));
  assert.ok((await client.countCollections()) >= 1);
  await c.modify({ name: "js-coll-renamed", metadata: { owner: "js", v: 2 } });
  const renamed = await client.getCollection({ name: "js-coll-renamed", ...noEf });
  assert.equal(renamed.id, c.id);
  assert.deepEqual(renamed.metadata, { owner: "js", v: 2 });
  assert.equal(await renamed.count(), 4);
  await client.deleteCollection({ name: "js-coll-renamed" });
  await rejects(client.getCollection({ name: "js-coll-renamed", ...noEf }), (e) =>
    assert.ok(e instanceof ChromaNotFoundError, `${e.name}: ${e.message}`),
  );
});

test("get with where, whereDocument, ids, limit, offset and include", async () => {
  const c = await fresh("js-get");
  const red = await c.get({ where: { color: "red" } });
  assert.deepEqual(red.ids, ["apple", "cherry"]);
  const and = await c.get({ where: { $and: [{ ripe: true }, { price: { $gt: 1.75 } }] } });
  assert.deepEqual(and.ids, ["cherry", "date"]);
  const or = await c.get({ where: { $or: [{ n: { $lte: 1 } }, { color: { $in: ["brown"] } }] } });
  assert.deepEqual(or.ids, ["apple", "date"]);
  const nin = await c.get({ where: { color: { $nin: ["red", "brown"] } } });
  assert.deepEqual(nin.ids, ["banana"]);
  const ne = await c.get({ where: { n: { $ne: 2 } } });
  assert.deepEqual(ne.ids, ["apple", "cherry", "date"]);
  const tagged = await c.get({ where: { tags: { $contains: "baked" } } });
  assert.deepEqual(tagged.ids, ["apple", "cherry"]);
  const doc = await c.get({ whereDocument: { $contains: "red" } });
  assert.deepEqual(doc.ids, ["apple", "cherry"]);
  const notDoc = await c.get({ whereDocument: { $not_contains: "red" } });
  assert.deepEqual(notDoc.ids, ["banana", "date"]);
  const both = await c.get({ where: { n: { $gte: 2 } }, whereDocument: { $contains: "red" } });
  assert.deepEqual(both.ids, ["cherry"]);
  const page = await c.get({ limit: 2, offset: 1 });
  assert.deepEqual(page.ids, ["banana", "cherry"]);
  const byIds = await c.get({ ids: ["date", "apple", "nope"], include: ["embeddings", "documents"] });
  assert.deepEqual(new Set(byIds.ids), new Set(["apple", "date"]));
  const i = byIds.ids.indexOf("date");
  assert.deepEqual(Array.from(byIds.embeddings[i]), [1, 1, 0]);
  assert.equal(byIds.documents[i], "a brown date loaf");
  assert.deepEqual(await c.peek({ limit: 1 }).then((r) => r.ids), ["apple"]);
});

test("query: nearest neighbours, filters, several queries", async () => {
  const c = await fresh("js-query");
  const q = await c.query({ queryEmbeddings: [[0.9, 0.1, 0]], nResults: 2 });
  assert.deepEqual(q.ids[0], ["apple", "date"]);
  assert.ok(Math.abs(q.distances[0][0] - 0.02) < 1e-5);
  const f = await c.query({
    queryEmbeddings: [[0.9, 0.1, 0], [0, 0, 1]],
    nResults: 3,
    where: { color: "red" },
    include: ["metadatas", "distances", "documents"],
  });
  assert.deepEqual(f.ids, [["apple", "cherry"], ["cherry", "apple"]]);
  assert.equal(f.metadatas[1][0].n, 3);
  assert.equal(f.documents[0][1], "a red cherry tart");
  const d = await c.query({ queryEmbeddings: [[0, 1, 0]], nResults: 4, whereDocument: { $contains: "loaf" } });
  assert.deepEqual(d.ids[0], ["date"]);
  const restricted = await c.query({ queryEmbeddings: [[0, 1, 0]], nResults: 4, ids: ["apple", "date"] });
  assert.deepEqual(restricted.ids[0], ["date", "apple"]);
});

test("add, upsert, update, delete", async () => {
  const c = await fresh("js-write");
  await c.update({ ids: ["apple"], metadatas: [{ color: "green" }] });
  let a = await c.get({ ids: ["apple"], include: ["metadatas", "documents"] });
  assert.equal(a.metadatas[0].color, "green");
  assert.equal(a.metadatas[0].n, 1, "update merges metadata");
  assert.equal(a.documents[0], "a red apple pie");
  await c.update({ ids: ["apple"], embeddings: [[0.9, 0, 0]], documents: ["a green apple"] });
  a = await c.get({ ids: ["apple"], include: ["documents"] });
  assert.equal(a.documents[0], "a green apple");
  await c.upsert({
    ids: ["apple", "elder"],
    embeddings: [
      [0.5, 0.5, 0],
      [0, 0.5, 0.5],
    ],
    metadatas: [{ color: "gold" }, { color: "purple" }],
  });
  assert.equal(await c.count(), 5);
  a = await c.get({ ids: ["apple"], include: ["metadatas", "embeddings"] });
  assert.equal(a.metadatas[0].color, "gold");
  assert.equal(a.metadatas[0].n, 1, "upsert of an existing record updates it (merging metadata)");
  assert.deepEqual(Array.from(a.embeddings[0]), [0.5, 0.5, 0]);
  await c.delete({ ids: ["banana"] });
  await c.delete({ where: { color: "purple" } });
  await c.delete({ whereDocument: { $contains: "tart" } });
  assert.deepEqual((await c.get()).ids, ["apple", "date"]);
  // Updating an id that does not exist changes nothing.
  await c.update({ ids: ["nope"], metadatas: [{ color: "x" }] });
  assert.equal(await c.count(), 2);
});

test("the search API: knn rank, where, limit, select", async () => {
  const c = await fresh("js-search");
  const s = new Search()
    .where(K("color").eq("red"))
    .rank(Knn({ query: [0.9, 0.1, 0] }))
    .limit(5)
    .select(K.DOCUMENT, K.SCORE, "n");
  const r = await c.search(s);
  assert.deepEqual(r.ids[0], ["apple", "cherry"]);
  const rows = r.rows()[0];
  assert.equal(rows[0].document, "a red apple pie");
  assert.equal(rows[0].metadata.n, 1);
  assert.ok(rows[0].score < rows[1].score);
  const two = await c.search([
    new Search().rank(Knn({ query: [0, 0, 1] })).limit(1),
    new Search().where(K("n").gte(3)).limit(10),
  ]);
  assert.deepEqual(two.ids, [["cherry"], ["cherry", "date"]]);
});

test("errors: not found, duplicates, wrong dimension, bad filters change nothing", async () => {
  const c = await fresh("js-errors");
  await rejects(client.createCollection({ name: "js-errors", ...noEf }), (e) =>
    assert.ok(e instanceof ChromaUniqueError, `${e.name}: ${e.message}`),
  );
  await rejects(c.add({ ids: ["x"], embeddings: [[1, 2]] }), (e) =>
    assert.match(e.message, /dimension of 3, got 2/),
  );
  await rejects(c.get({ where: { n: { $bogus: 1 } } }), (e) => assert.ok(e.message.length > 0));
  await rejects(c.add({ ids: ["fig"], embeddings: [[9, 9, 9]], metadatas: [{ $bad: 1 }] }), (e) =>
    assert.ok(e.message.length > 0),
  );
  assert.equal(await c.count(), 4);
  await client.deleteCollection({ name: "js-errors" });
  await rejects(c.add({ ids: ["y"], embeddings: [[1, 2, 3]] }), (e) =>
    assert.ok(e instanceof ChromaNotFoundError, `${e.name}: ${e.message}`),
  );
  await rejects(client.deleteCollection({ name: "js-errors" }), (e) =>
    assert.ok(e instanceof ChromaNotFoundError, `${e.name}: ${e.message}`),
  );
});
