"""MemoryBank: many memories as one folder, loaded when used, routed per question (issue 17)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import bag_of_words, build_tiny_model

from lift_integrations import BankRouting, LIFTConfig, LIFTModel, Memory, MemoryBank, MemoryRouter
from lift_integrations.absorb.replay import load_replay_prompts
from lift_integrations.bank import BANK_FILE, bank_names
from lift_integrations.errors import MemoryFormatError
from lift_integrations.routing import load_calibration_questions, text_memory

ARTICLES = {
    "observatory": (
        "Quillon Observatory",
        "The Quillon Observatory was opened in 1911 by the astronomer Helena Marsh. Its great refractor "
        "was ground in Lisbon. Every winter the observatory hosts a comet festival for the town of Ardley.",
    ),
    "harbour": (
        "Vellmouth Harbour",
        "Vellmouth Harbour was dredged in 1878 by engineer Tomas Greer. Fishing boats unload herring at "
        "the eastern quay, and a lighthouse called Old Kestrel guards the breakwater.",
    ),
    "orchard": (
        "Brambleigh Orchard",
        "Brambleigh Orchard grows forty kinds of pears. The orchard was planted by the widow Agnes "
        "Pellow, and its cider press dates from 1796. Beekeepers rent hives among the trees each spring.",
    ),
}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
SMALL = dict(
    segment_length=32,
    segment_stride=24,
    context_view_length=16,
    qa_per_document=4,
    stage1_epochs=1,
    stage2_epochs=1,
    max_seq_length=128,
)


@pytest.fixture(scope="module")
def memories() -> dict[str, Memory]:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    absorbed = lift.absorb_many(list(ARTICLES.values()), config=LIFTConfig.fast(**SMALL))
    return dict(zip(ARTICLES, absorbed, strict=True))


def test_a_saved_bank_loads_its_memories_when_used(memories: dict[str, Memory], tmp_path: Path) -> None:
    bank = MemoryBank(memories)
    bank.save(tmp_path / "bank")
    loaded = MemoryBank.load(tmp_path / "bank")
    assert loaded.names == list(ARTICLES) and len(loaded) == 3 and "harbour" in loaded
    assert loaded.loaded_bytes == 0  # nothing read yet
    assert loaded.documents("harbour")[0].title == "Vellmouth Harbour"
    memory = loaded["harbour"]
    assert memory.id == memories["harbour"].id
    assert loaded.loaded_bytes == memory.size_bytes
    assert loaded.get("harbour") is memory


def test_adding_and_removing_leaves_the_other_memories_folders_alone(
    memories: dict[str, Memory], tmp_path: Path
) -> None:
    bank = MemoryBank({"observatory": memories["observatory"], "harbour": memories["harbour"]})
    folder = bank.save(tmp_path / "bank")
    before = os.stat(folder / "observatory" / "manifest.json")
    bank.add("orchard", memories["orchard"])
    bank.remove("harbour")
    bank.save(folder)
    after = os.stat(folder / "observatory" / "manifest.json")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert not (folder / "harbour").exists() and (folder / "orchard").is_dir()
    assert MemoryBank.load(folder).names == ["observatory", "orchard"]


def test_loaded_memories_are_dropped_past_the_budget(memories: dict[str, Memory], tmp_path: Path) -> None:
    MemoryBank(memories).save(tmp_path / "bank")
    size = memories["orchard"].size_bytes
    bank = MemoryBank.load(tmp_path / "bank", max_loaded_bytes=size)
    first = bank["observatory"]
    bank["harbour"]
    assert bank.loaded_bytes <= size
    again = bank["observatory"]  # read again from its folder
    assert again.id == first.id and again is not first
    assert bank.loaded_bytes <= size


def test_a_bank_refuses_what_it_cannot_hold(memories: dict[str, Memory], tmp_path: Path) -> None:
    bank = MemoryBank({"observatory": memories["observatory"]})
    with pytest.raises(ValueError, match="already holds"):
        bank.add("observatory", memories["harbour"])
    bank.add("observatory", memories["harbour"], replace=True)
    for name in ("", "a/b", "..", " padded"):
        with pytest.raises(ValueError, match="name"):
            bank.add(name, memories["harbour"])
    with pytest.raises(TypeError, match="a Memory, a folder or a hub id"):
        bank.add("text", 42)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no memory at"):
        bank.add("text", "not a memory")  # a string names a folder (or a hub id)
    with pytest.raises(KeyError, match="no memory named"):
        bank["missing"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no memory bank"):
        bank.save(other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_damaged_bank_is_refused(memories: dict[str, Memory], tmp_path: Path) -> None:
    folder = MemoryBank(memories).save(tmp_path / "bank")
    manifest = json.loads((folder / BANK_FILE).read_text())
    manifest["memories"][0]["id"] = "0" * 64
    (folder / BANK_FILE).write_text(json.dumps(manifest))
    bank = MemoryBank.load(folder)
    with pytest.raises(MemoryFormatError, match="manifest names"):
        bank["observatory"]
    (folder / BANK_FILE).write_text("{not json")
    with pytest.raises(MemoryFormatError, match="not valid JSON"):
        MemoryBank.load(folder)
    (folder / BANK_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(MemoryFormatError, match="lift-memory-bank"):
        MemoryBank.load(folder)
    with pytest.raises(FileNotFoundError):
        MemoryBank.load(tmp_path / "nowhere")


HARBOUR_Q = "Who dredged Vellmouth Harbour?"


def test_a_saved_bank_keeps_its_routing(memories: dict[str, Memory], tmp_path: Path) -> None:
    """``margin=2`` lifts every threshold above any relevance (at most ``1 + lexical_weight``): a
    question the default routing sends to a memory goes to the base model, before and after a reload."""
    bank = MemoryBank(memories)
    assert bank.routing == BankRouting() and bank.router(embed=bag_of_words).route_many([HARBOUR_Q]) == [
        "harbour"
    ]
    bank.routing = {"margin": 2}  # a dict of options, checked and converted
    assert bank.routing == BankRouting(margin=2.0)
    folder = bank.save(tmp_path / "bank")
    assert json.loads((folder / BANK_FILE).read_text())["routing"] == BankRouting(margin=2.0).to_dict()
    loaded = MemoryBank.load(folder)
    assert loaded.routing == BankRouting(margin=2.0)
    assert loaded.router(embed=bag_of_words).route_many([HARBOUR_Q]) == [None]
    # Options passed to router() override the bank's: one by one, or a whole BankRouting.
    assert loaded.router(embed=bag_of_words, margin=0.0).route_many([HARBOUR_Q]) == ["harbour"]
    assert loaded.router(embed=bag_of_words, routing=BankRouting()).route_many([HARBOUR_Q]) == ["harbour"]
    # The router holds the options in use: the calibration's own defaults where none was given.
    assert loaded.router(embed=bag_of_words, calibration="joint").routing == BankRouting(
        margin=2.0, calibration="joint", quantile=0.99, lexical_weight=0.5
    )
    # A routing given to save() is written for that folder only; the bank keeps its own.
    again = MemoryBank(memories, routing=BankRouting(calibration="joint"))
    again.save(tmp_path / "other", routing={"margin": 0.5})
    assert MemoryBank.load(tmp_path / "other").routing == BankRouting(margin=0.5)
    assert again.routing == BankRouting(calibration="joint")
    with pytest.raises(ValueError, match="calibration must be one of"):
        again.routing = {"calibration": "global"}
    assert again.routing == BankRouting(calibration="joint")


def test_a_manifest_written_without_routing_loads_with_the_defaults(
    memories: dict[str, Memory], tmp_path: Path
) -> None:
    """Banks saved before the manifest kept the routing options still load, and route by the defaults."""
    folder = MemoryBank(memories, routing=BankRouting(margin=2.0)).save(tmp_path / "bank")
    manifest = json.loads((folder / BANK_FILE).read_text())
    old = {"format": "lift-memory-bank", "version": 1, "memories": manifest["memories"]}
    (folder / BANK_FILE).write_text(json.dumps(old))
    loaded = MemoryBank.load(folder)
    assert loaded.routing == BankRouting() and loaded.names == list(ARTICLES)
    assert loaded.router(embed=bag_of_words).route_many([HARBOUR_Q]) == ["harbour"]
    assert loaded["harbour"].id == memories["harbour"].id


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"margin": "wide"}, "margin must be a finite number"),
        ({"calibration": "global"}, "calibration must be one of per_memory, joint, bank"),
        ({"quantile": 3}, "quantile must be"),
        ({"threshold": 0.5}, r"unknown bank routing options \['threshold'\]"),
        ([0.5], "must be a BankRouting, a dict of its options"),
    ],
)
def test_a_bad_routing_in_the_manifest_is_refused_by_name(
    memories: dict[str, Memory], tmp_path: Path, routing: Any, message: str
) -> None:
    folder = MemoryBank(memories).save(tmp_path / "bank")
    manifest = json.loads((folder / BANK_FILE).read_text())
    manifest["routing"] = routing
    written = json.dumps(manifest)
    (folder / BANK_FILE).write_text(written)
    with pytest.raises(MemoryFormatError, match=f"bank.json: 'routing': .*{message}") as error:
        MemoryBank.load(folder)
    assert str(folder / BANK_FILE) in str(error.value)
    assert (folder / BANK_FILE).read_text() == written  # nothing is lost: the folder is as it was
    assert all((folder / name).is_dir() for name in ARTICLES)
    MemoryBank(memories).save(folder)  # saving a bank over it repairs it
    assert MemoryBank.load(folder).routing == BankRouting()


@pytest.mark.parametrize("calibration", ["per_memory", "joint"])
def test_a_bank_of_one_routes_as_its_memory_router(memories: dict[str, Memory], calibration: str) -> None:
    questions = [
        "Who opened the Quillon Observatory?",
        "Where was the great refractor ground?",
        "What is the capital of France?",
        "Which comet festival does Ardley host?",
    ]
    memory = memories["observatory"]
    expected = MemoryRouter(memory, embed=bag_of_words).wants(questions)
    bank = MemoryBank({"observatory": memory})
    routed = bank.router(embed=bag_of_words, calibration=calibration).route_many(questions)
    assert routed == ["observatory" if wanted else None for wanted in expected]


def test_joint_calibration_lets_the_bank_claim_no_more_replay_questions_than_one_memory() -> None:
    replay = [p.question for p in load_replay_prompts()]
    bank = MemoryBank({name: text_memory([article]) for name, article in ARTICLES.items()})
    alone = bank.router(embed=bag_of_words, calibration="per_memory")
    joint = bank.router(embed=bag_of_words, calibration="joint")
    shift = joint.thresholds - alone.thresholds
    assert shift.min() >= 0.0 and np.ptp(shift) < 1e-6  # one shift for every memory (float32)
    claimed = sum(name is not None for name in joint.route_many(replay)) / len(replay)
    assert claimed <= 1.0 - joint.quantile + 1.0 / len(replay)
    claimed_alone = sum(name is not None for name in alone.route_many(replay)) / len(replay)
    assert claimed <= claimed_alone
    with pytest.raises(ValueError, match="calibration must be"):
        bank.router(embed=bag_of_words, calibration="global")


def test_bank_calibration_lets_the_bank_claim_its_share_of_the_calibration_questions() -> None:
    """``calibration="bank"``: one threshold, in standard deviations of each memory's relevance on the
    replay and calibration questions, lets the bank as a whole claim ``1 - quantile`` of them."""
    calibration = [p.question for p in load_replay_prompts()] + list(load_calibration_questions())
    bank = MemoryBank({name: text_memory([article]) for name, article in ARTICLES.items()})
    claimed = {}
    for quantile in (0.8, 0.95):
        router = bank.router(embed=bag_of_words, calibration="bank", quantile=quantile)
        routed = router.route_many(calibration)
        claimed[quantile] = sum(name is not None for name in routed)
        assert 0 < claimed[quantile] <= (1.0 - quantile) * len(calibration) + 1
        assert router.route_many(
            [
                "Who dredged Vellmouth Harbour?",
                "Who planted Brambleigh Orchard?",
                "What is the capital of France?",
                "",
            ]
        ) == ["harbour", "orchard", None, None]
    assert claimed[0.95] < claimed[0.8]  # a higher quantile is stricter


def test_calibration_questions_are_not_the_probes_or_the_replay_questions() -> None:
    """Routing is reported on the general-ability probe's questions, so none of them calibrates it."""
    questions = load_calibration_questions()
    probe = json.loads((EXAMPLES / "general_questions.json").read_text(encoding="utf-8"))
    normalised = {q.strip().lower() for q in questions}
    assert len(normalised) == len(questions) >= 200
    assert not normalised & {q["question"].strip().lower() for q in probe}
    assert not normalised & {p.question.strip().lower() for p in load_replay_prompts()}


@pytest.mark.slow
def test_no_calibration_question_paraphrases_a_probe_question() -> None:
    """The filter the calibration set was built with: all-MiniLM-L6-v2 cosine similarity below 0.7 to
    every probe question (docs/routing.md, "Routing in a bank")."""
    from lift_integrations.routing import default_embedder, normalised_rows

    probe = [q["question"] for q in json.loads((EXAMPLES / "general_questions.json").read_text("utf-8"))]
    questions = list(load_calibration_questions())
    embed = default_embedder()
    similarity = (
        normalised_rows(embed(questions), len(questions)) @ normalised_rows(embed(probe), len(probe)).T
    )
    assert 0.6 < similarity.max() < 0.7


def test_each_question_goes_to_the_memory_of_its_document() -> None:
    bank = MemoryBank({name: text_memory([article]) for name, article in ARTICLES.items()})
    router = bank.router(embed=bag_of_words)
    assert router.route_many(
        [
            "Who dredged Vellmouth Harbour?",
            "Which lighthouse guards the breakwater at Vellmouth?",
            "Who planted Brambleigh Orchard?",
            "Who opened the Quillon Observatory?",
            "What is the capital of France?",
            "",
        ]
    ) == ["harbour", "harbour", "orchard", "observatory", None, None]
    assert len(router.thresholds) == 3
    with pytest.raises(TypeError, match="list of questions"):
        router.route_many("one question")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no memories"):
        MemoryBank().router()


def test_names_are_folder_safe_and_unique() -> None:
    assert bank_names(
        ["Quillon Observatory", "", "a/b: c", "Quillon Observatory", "quillon observatory"]
    ) == [
        "Quillon-Observatory",
        "document-2",
        "a-b-c",
        "Quillon-Observatory-2",
        "quillon-observatory-3",
    ]
    bank = MemoryBank({"Harbour": text_memory([ARTICLES["harbour"]])})
    with pytest.raises(ValueError, match="share a folder"):
        bank.add("harbour", text_memory([ARTICLES["harbour"]]))


def test_a_bank_from_documents_holds_one_memory_per_document() -> None:
    model, tokenizer = build_tiny_model("llama")
    lift = LIFTModel(model, tokenizer, name="tiny-llama")
    config = LIFTConfig.fast(**SMALL)
    bank = MemoryBank.from_documents(lift, list(ARTICLES.values()), config=config)
    assert bank.names == ["Quillon-Observatory", "Vellmouth-Harbour", "Brambleigh-Orchard"]
    assert [d.title for d in bank.documents("Vellmouth-Harbour")] == ["Vellmouth Harbour"]
    alone = lift.absorb(ARTICLES["harbour"], config=config)
    assert bank["Vellmouth-Harbour"].stats["steps"] == alone.stats["steps"]
    with pytest.raises(ValueError, match="2 names for 3 memories"):
        MemoryBank.from_documents(lift, list(ARTICLES.values()), names=["a", "b"], config=config)


@pytest.mark.parametrize("router_kind", ["bank", "memory"])
def test_concurrent_routes_are_embedded_together(router_kind: str) -> None:
    """48 request threads routing at once embed their questions in a few calls, not 48, and route as
    ``route_many``/``wants`` do (a :class:`BankRouter` and a :class:`MemoryRouter`)."""
    import threading
    import time

    embedded: list[int] = []

    def slow_bag_of_words(texts: Any) -> Any:
        embedded.append(len(texts))
        time.sleep(0.05)  # a real embedder's forward pass: the other threads arrive meanwhile
        return bag_of_words(texts)

    questions = ["Who dredged Vellmouth Harbour?", "Who planted Brambleigh Orchard?", "What is 2 + 2?"] * 16
    if router_kind == "bank":
        bank = MemoryBank({name: text_memory([article]) for name, article in ARTICLES.items()})
        router: Any = bank.router(embed=slow_bag_of_words)
        expected: list[Any] = router.route_many(questions)  # also embeds the passages and calibrates, once
        assert expected[:3] == ["harbour", "orchard", None]
    else:
        router = MemoryRouter(text_memory([ARTICLES["harbour"]]), embed=slow_bag_of_words)
        expected = [router.memory if wanted else None for wanted in router.wants(questions)]
        assert expected[:3] == [router.memory, None, None]
    embedded.clear()
    start = threading.Barrier(len(questions))
    routed: list[Any] = [None] * len(questions)

    def route(index: int) -> None:
        start.wait()
        routed[index] = router.route(questions[index])

    threads = [threading.Thread(target=route, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert routed == expected
    assert sum(embedded) == len(questions) and len(embedded) <= 4
