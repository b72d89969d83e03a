"""One shared-model registry for both framework bindings (``lift_integrations.registry``).

A process that uses LangChain and LlamaIndex together must load the base weights once: a chat model and
an LLM configured with the same name get the same :class:`LIFTModel` object.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import lift_integrations.langchain as langchain_binding
import lift_integrations.llama_index as llama_index_binding
from lift_integrations import LIFTModel, registry
from lift_integrations.langchain import LIFTChatModel
from lift_integrations.llama_index import LIFTLLM


def test_a_chat_model_and_an_llm_with_one_registered_name_share_the_model(tiny_lift: LIFTModel) -> None:
    registry.register_model("shared-tiny", tiny_lift)
    try:
        chat, llm = LIFTChatModel(model="shared-tiny"), LIFTLLM("shared-tiny")
        assert registry.is_loaded("shared-tiny")
        assert chat.lift is llm.lift_model is tiny_lift
        assert chat.invoke("Hello", max_tokens=4).content == llm.complete("Hello", max_new_tokens=4).text
    finally:
        registry.unregister_model("shared-tiny")
    assert not registry.is_loaded("shared-tiny")
    assert llm.lift_model is tiny_lift, "an LLM keeps the model it has used"


def test_both_frameworks_load_a_model_once(tiny_lift: LIFTModel, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Any] = []

    def fake_from_pretrained(name: Any, **kwargs: Any) -> Any:
        loads.append((name, kwargs))
        time.sleep(0.05)  # a slow load, so that concurrent first uses overlap
        return tiny_lift

    monkeypatch.setattr(LIFTModel, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setattr(registry, "_CACHE", {})
    chats = [LIFTChatModel(model="some/model", device="cpu") for _ in range(4)]
    llms = [LIFTLLM("some/model", device="cpu") for _ in range(4)]
    assert not loads, "construction loads nothing"
    found: list[Any] = []
    threads = [threading.Thread(target=lambda c=c: found.append(c.lift)) for c in chats] + [
        threading.Thread(target=lambda m=m: found.append(m.lift_model)) for m in llms
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(found) == 8 and all(model is tiny_lift for model in found)
    assert loads == [("some/model", {"device": "cpu", "dtype": None})]
    assert registry.is_loaded("some/model", "cpu") and not registry.is_loaded("some/model", "cuda")
    registry.clear_model_cache()
    assert not registry.is_loaded("some/model", "cpu")


def test_the_bindings_export_the_core_registry() -> None:
    for binding in (langchain_binding, llama_index_binding):
        assert binding.register_model is registry.register_model
        assert binding.unregister_model is registry.unregister_model
        assert binding.clear_model_cache is registry.clear_model_cache


def test_register_model_checks_its_arguments(tiny_lift: LIFTModel) -> None:
    with pytest.raises(TypeError, match="expects a LIFTModel"):
        registry.register_model("not-a-model", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a str name"):
        registry.register_model(3, tiny_lift)  # type: ignore[arg-type]
    assert not registry.is_loaded("not-a-model")
    registry.register_model("kept", tiny_lift)
    try:
        registry.clear_model_cache()
        assert registry.shared_model("kept") is tiny_lift, "clearing the cache keeps registered models"
    finally:
        registry.unregister_model("kept")
    registry.unregister_model("kept")  # forgetting an unknown name is not an error


def test_importing_the_registry_loads_no_framework_and_no_torch() -> None:
    code = (
        "import sys; from lift_integrations import registry; "
        "registry.is_loaded('x'); registry.is_lift_model(object()); "
        "heavy = ('torch', 'transformers', 'langchain_core', 'llama_index'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
