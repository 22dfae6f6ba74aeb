"""The thread communicator in a real Jupyter kernel, whose event loop is already running:
subscriber output reaches the cell, blocking calls work from cells (also after a top-level
``await``), and ``close()`` can be called repeatedly with results still readable after it."""

from __future__ import annotations

import uuid

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    """\
import kiwipy
comm = kiwipy.connect({url!r}, message_exchange={exchange!r}, task_exchange={tasks!r},
                      task_queue={tasks!r}, testing_mode=True)
def double(_comm, msg):
    print('subscriber got', msg)
    return msg * 2
comm.add_rpc_subscriber(double, {ident!r})
future = comm.rpc_send({ident!r}, 21)
print('result', future.result(timeout=5))""",
    """\
import asyncio
await asyncio.sleep(0.01)
print('after await', comm.rpc_send({ident!r}, 50).result(timeout=5))""",
    """\
comm.close()
comm.close()
print('closed', comm.is_closed(), future.result())""",
]


def _outputs(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.get("name") == "stdout")


def test_thread_communicator_in_a_jupyter_kernel(rmq_uri: str) -> None:
    name = f"kt.nb.{uuid.uuid4().hex[:8]}"
    fields = {
        "url": rmq_uri,
        "exchange": f"{name}.messages",
        "tasks": f"{name}.tasks",
        "ident": f"{name}.rpc",
    }
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(src.format(**fields)) for src in CELLS]
    NotebookClient(notebook, timeout=30, kernel_name="python3").execute()
    first, second, third = (_outputs(cell) for cell in notebook.cells)
    assert "subscriber got 21" in first
    assert "result 42" in first
    assert "subscriber got 50" in second and "after await 100" in second
    assert third.strip() == "closed True 42"


pytestmark = pytest.mark.integration
