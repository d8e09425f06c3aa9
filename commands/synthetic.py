"""Generated embedded-chunks tables, and how well a search finds their exact neighbours.

``benchmarks/query.py`` measures ANN latency and recall on these tables and the index/query
defaults were chosen on them (200k rows); ``tests/test_query_ann.py`` asserts that recall on a
120k-row table from the same generator (past the 100k rows where ``index`` builds IVF_PQ). Both
import them from here (issue 10: tests used to import the benchmark script).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .spaces import dense

DIM = 384
# the default model, so `query` can embed text queries against a generated table
MODEL_META = {"plugin": "sentence-transformers", "name": "all-MiniLM-L6-v2", "dim": DIM,
              "normalize": True, "pooling": "mean", "prompts": {}}


def clustered_vectors(n: int, *, dim: int = DIM, cluster_size: int = 20, spread: float = 0.3,
                      fields: int | None = None, field_spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit vectors clustered in two levels, like chunk embeddings: fields, then topics in a field.

    Uniform random vectors in 384 dims have no neighbours worth the name (every pair is at
    cosine ≈ 0), and independent clusters have no coarse structure for an IVF index to
    partition; real embeddings group by field, then by topic. ``fields`` defaults to
    sqrt(n) / 2 (about two IVF partitions per field at the index's sqrt(rows) partitions).
    """
    rng = np.random.default_rng(seed)
    n_topics = -(-n // cluster_size)
    n_fields = fields or max(1, round(np.sqrt(n) / 2))
    field_centers = rng.standard_normal((n_fields, dim), dtype=np.float32)
    topics = field_centers[rng.integers(0, n_fields, n_topics)]
    topics += field_spread * rng.standard_normal(topics.shape, dtype=np.float32)
    v = np.repeat(topics, cluster_size, axis=0)[:n]
    v += spread * rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def query_vectors(base: np.ndarray, n: int, *, spread: float = 0.15, seed: int = 1) -> np.ndarray:
    """Queries near stored vectors (a query is about some topic in the store)."""
    rng = np.random.default_rng(seed)
    q = base[rng.choice(len(base), n, replace=False)].copy()
    q += spread * rng.standard_normal(q.shape, dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def token_vectors(n: int, per_chunk: int, *, dim: int = DIM, vocab: int = 20_000, topic_words: int = 200,
                  common: float = 0.3, context: float = 0.7, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(``float32 [n * per_chunk, dim]`` unit token vectors, ``int64 [n * per_chunk]`` word ids) of ``n``
    chunks, like a contextual model's: each token is its word's vector plus context noise.

    Words are clustered (:func:`clustered_vectors`), a chunk draws its words from its topic's
    ``topic_words`` and, for a ``common`` share, from the 100 most frequent words (function words
    every chunk has), so an IVF index over the tokens sees what it sees in real text: many near
    copies of each word, a few heavy ones. Random unit tokens would have no neighbours at all.
    """
    rng = np.random.default_rng(seed)
    words = clustered_vectors(vocab, dim=dim, cluster_size=10, seed=seed + 1)
    topics = rng.integers(0, vocab // topic_words, n)
    ids = topics[:, None] * topic_words + rng.integers(0, topic_words, (n, per_chunk))
    stop = rng.random((n, per_chunk)) < common
    ids[stop] = rng.integers(0, 100, int(stop.sum()))
    ids = ids.reshape(-1)
    out = words[ids] + (context / np.sqrt(dim)) * rng.standard_normal((len(ids), dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, ids


def generated_table(vectors: np.ndarray) -> pa.Table:
    """One one-chunk document per vector (ids ``g<i>#0``), in the embedded-chunks schema."""
    from .schemas import embedded_fields, stage_metadata

    n, dim = vectors.shape
    ids = pa.array([f"g{i}" for i in range(n)])
    cols = {
        "id": pc.binary_join_element_wise(ids, pa.scalar("0"), "#"), "doc_id": ids,
        "chunk_index": pa.array(np.zeros(n, np.int32)),
        "text": pc.binary_join_element_wise(pa.scalar("generated row"), ids, " "),
        "start": pa.array(np.zeros(n, np.int32)), "end": pa.array(np.full(n, 10, np.int32)),
        dense.COLUMN: dense.column(vectors, dim),
        "doc_key": pa.array(["k"] * n),
    }
    meta = stage_metadata("embed", model={**MODEL_META, "dim": dim})
    return pa.table(cols, schema=pa.schema(embedded_fields(dim), metadata=meta))


def recall_at_k(db: str, queries: np.ndarray, k: int = 10, **options) -> float:
    """Mean recall@k of ``search(**options)`` against exact search, all queries in one batch."""
    from .query import search

    texts = [f"v{i}" for i in range(len(queries))]
    got = _ids_by_query(search(db, texts, k=k, query_vectors=queries, **options))
    exact = _ids_by_query(search(db, texts, k=k, query_vectors=queries, exact=True))
    return float(np.mean([len(got.get(q, set()) & ids) / len(ids) for q, ids in exact.items()]))


def _ids_by_query(hits: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for q, i in zip(hits["query_id"].to_pylist(), hits["id"].to_pylist(), strict=True):
        out.setdefault(q, set()).add(i)
    return out


# ------------------------------------------------------------------ a LIMIT-style collection

# People listing many things they like, queries asking who likes one of them (after LIMIT,
# Weller et al. 2025): the query matches a few words of a long document, which one dense vector
# per document blurs and BM25 or late interaction (MaxSim) finds. Names and things are ours.
_FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kalani",
          "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Soren", "Tamsin", "Umar", "Vera",
          "Wiktor", "Ximena", "Yusuf", "Zofia", "Anselm", "Bettina", "Casimir", "Delphine")
_LAST = ("Abara", "Brandt", "Castell", "Dunmore", "Eskola", "Ferreira", "Gallo", "Hollis", "Ivanova",
         "Jankowski", "Kovac", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Pereira", "Quist", "Rahman",
         "Sato", "Tanaka", "Urquhart", "Varga", "Weber", "Yilmaz", "Zeller")
# 300 things, one or two words each, no word shared between two things
_THINGS = """apricots avocados bananas blackberries cherries coconuts cranberries dates figs gooseberries
grapefruit guavas kiwis kumquats lemons limes lychees mangoes melons mulberries nectarines olives
papayas peaches pears persimmons pineapples plums pomegranates quinces raspberries rhubarb
strawberries tangerines artichokes asparagus beetroot broccoli cabbage carrots cauliflower celery
chickpeas cucumbers eggplant fennel garlic kale leeks lentils mushrooms okra onions parsnips peas
potatoes pumpkins radishes shallots spinach turnips zucchini alpacas badgers beavers bison camels
cheetahs chinchillas chipmunks cougars coyotes crocodiles dolphins donkeys ferrets gazelles gerbils
giraffes gorillas hamsters hedgehogs hippos hyenas iguanas jaguars kangaroos koalas lemurs leopards
llamas lynxes meerkats mongooses moose narwhals ocelots otters pandas pangolins porcupines quokkas
raccoons reindeer rhinos salamanders seals skunks sloths squirrels tapirs tortoises walruses wombats
zebras albatrosses cormorants cranes cuckoos eagles falcons flamingos herons hummingbirds kingfishers
magpies nightingales ospreys ostriches owls parrots peacocks pelicans penguins puffins ravens robins
sparrows starlings storks swans toucans vultures woodpeckers anchovies barracudas carp catfish cod
eels haddock halibut herring mackerel marlin perch pike salmon sardines snapper sturgeon swordfish
trout tuna accordions bagpipes banjos bassoons cellos clarinets cymbals didgeridoos drums dulcimers
flutes gongs harmonicas harps harpsichords kazoos lutes mandolins marimbas oboes ocarinas organs
pianos sitars tambourines trombones trumpets tubas ukuleles violins xylophones archery badminton
baseball basketball bowling boxing canoeing cricket croquet curling fencing golf gymnastics handball
hockey hurling judo karate lacrosse netball polo rowing rugby sailing skateboarding skiing snooker
snowboarding squash surfing tennis volleyball wrestling anvils chisels crowbars drills hacksaws
hammers ladders mallets pliers rakes sanders screwdrivers shovels spanners trowels wheelbarrows
wrenches anoraks berets blazers bowties cardigans cloaks clogs dungarees fedoras galoshes kilts
kimonos leggings mittens moccasins ponchos sandals sarongs scarves slippers sombreros tuxedos
waistcoats armchairs bookcases chandeliers cupboards dressers futons hammocks ottomans recliners
rocking chairs sideboards sofas stools wardrobes balloons blimps bulldozers canoes caravans ferries
gondolas helicopters hovercraft kayaks limousines motorcycles rickshaws scooters sleds submarines
tractors trams unicycles yachts azaleas begonias bluebells buttercups camellias carnations daffodils
dahlias daisies gardenias geraniums hyacinths irises jasmine lavender lilacs lilies magnolias
marigolds orchids peonies petunias poppies primroses sunflowers tulips violets wisteria""".split()
_TWO_WORDS = {"rocking": "rocking chairs"}


def _things() -> list[str]:
    out, skip = [], False
    for word in _THINGS:
        if skip:
            skip = False
            continue
        if word in _TWO_WORDS:
            out.append(_TWO_WORDS[word])
            skip = True
        else:
            out.append(word)
    return out


def likes_collection(people: int = 50, likes: int = 24, per_item: int = 4, seed: int = 0,
                     distractors: int = 0) -> tuple[list[dict], list[dict], list[tuple[str, str, int]]]:
    """(corpus, queries, qrels) in BEIR's shape: ``people`` documents each listing ``likes`` things,
    one query "Who likes X?" per thing, each liked by exactly ``per_item`` people (its relevant set).
    ``distractors`` more people like ``likes`` things no query asks about (LIMIT's large version:
    a first stage must find the few relevant documents among many lists like theirs).

    Each document lists two dozen unrelated things: one vector for the whole list cannot stay
    close to every one of them, which is what makes one vector per document fail on LIMIT.
    """
    n_items = people * likes // per_item
    pool = _things()
    if n_items > len(pool):
        raise ValueError(f"{n_items} things asked for, {len(pool)} available")
    rng = np.random.default_rng(seed)
    items = [pool[i] for i in rng.choice(len(pool), n_items, replace=False)]
    names = [f"{f} {last}" for f in _FIRST for last in _LAST]
    names = [names[i] for i in rng.choice(len(names), people, replace=False)]
    # each thing to per_item people, each person exactly `likes` things: per_item rounds, each a
    # shuffled deal of every thing, `likes / per_item` to a person; a thing dealt to someone who
    # already holds it is swapped with another person's card until nobody holds one twice
    if likes % per_item:
        raise ValueError("likes must be a multiple of per_item")
    share = likes // per_item
    held: list[set[int]] = [set() for _ in range(people)]
    for _ in range(per_item):
        deal = rng.permutation(n_items).reshape(people, share)
        for p in range(people):
            for j in range(share):
                while int(deal[p, j]) in held[p] or int(deal[p, j]) in deal[p, :j]:
                    q, i = int(rng.integers(people)), int(rng.integers(share))
                    a, b = int(deal[p, j]), int(deal[q, i])
                    if q == p or (q < p and a in held[q]):
                        continue  # p's own row, or a person already dealt who holds it
                    deal[p, j], deal[q, i] = b, a  # the loop checks b for p; q > p checks a later
                    if q < p:
                        held[q].discard(b)
                        held[q].add(a)
            held[p].update(int(x) for x in deal[p])
    corpus, fans = [], {i: [] for i in range(n_items)}
    for p, row in enumerate(sorted(h) for h in held):
        doc_id = f"p{p:03d}"
        order = rng.permutation(len(row))
        row = [row[i] for i in order]
        things = [items[i] for i in row]
        corpus.append({"_id": doc_id, "title": "", "text": f"{names[p]} likes {', '.join(things[:-1])} "
                                                          f"and {things[-1]}."})
        for i in row:
            fans[int(i)].append(doc_id)
    others = [t for t in pool if t not in set(items)]
    if distractors and len(others) < likes:
        raise ValueError(f"{len(others)} things left for distractors, {likes} needed each")
    for p in range(distractors):
        things = [others[i] for i in rng.choice(len(others), likes, replace=False)]
        name = f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}"
        corpus.append({"_id": f"x{p:05d}", "title": "",
                       "text": f"{name} likes {', '.join(things[:-1])} and {things[-1]}."})
    queries = [{"_id": f"q{i:04d}", "text": f"Who likes {items[i]}?"} for i in range(n_items)]
    qrels = [(f"q{i:04d}", d, 1) for i in range(n_items) for d in fans[i]]
    return corpus, queries, qrels


def write_beir(root, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> None:
    """A collection in BEIR's layout (corpus.jsonl, queries.jsonl, qrels/test.tsv), what `eval` reads."""
    import json
    from pathlib import Path

    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
