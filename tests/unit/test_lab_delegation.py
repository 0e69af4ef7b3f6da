"""lab/checks/delegation.py: which uses of the reference implementation a student file makes.

Pure: each case is a small source text read with ``ast`` (never run), and the rules
of one exercise (``Reference``).  The checkers' own use of it is tested in
tests/integration/test_labs.py.
"""

from __future__ import annotations

import pytest

from lab.checks.delegation import Reference, find_delegation

RULES = Reference(forbid=("proxy.http1.reader", "proxy.http1.fields", "proxy.balancer.LeastConnections"),
                  allow=("proxy.http1.fields.TOKEN",), why="the reference")

# (id, source, the dotted name found, or None)
CASES = [
    ("from-import", "from proxy.http1 import RequestReader\nRequestReader()\n", "proxy.http1.RequestReader"),
    ("module alias", "import proxy.http1 as h\nh.RequestReader()\n", "proxy.http1.RequestReader"),
    ("plain import chain", "import proxy.http1.reader\nproxy.http1.reader.RequestReader()\n",
     "proxy.http1.reader.RequestReader"),
    ("re-export of a forbidden module's function", "from proxy.http1 import parse_request_head\nparse_request_head\n",
     None),  # lives in proxy.http1.head, which these rules do not forbid
    ("a forbidden object", "from proxy.balancer import LeastConnections as L\nx = L()\n",
     "proxy.balancer.LeastConnections"),
    ("a permitted neighbour", "from proxy.balancer import RoundRobin\nRoundRobin()\n", None),
    ("allowed constant of a forbidden module", "from proxy.http1.fields import TOKEN\nTOKEN.fullmatch('x')\n", None),
    ("allowed constant through the module", "from proxy.http1 import fields\nfields.TOKEN.fullmatch('x')\n", None),
    ("forbidden function of the same module", "from proxy.http1 import fields\nfields.parse_field_lines([])\n",
     "proxy.http1.fields.parse_field_lines"),
    ("import alone is not a use", "from proxy.http1 import RequestReader  # noqa\n", None),
    ("inside demo()", "def demo():\n    from proxy.http1 import RequestReader\n    RequestReader()\n", None),
    ("under the main guard", "from proxy.http1 import RequestReader\nif __name__ == '__main__':\n"
                             "    RequestReader()\n", None),
    ("inside another function", "from proxy.http1 import RequestReader\ndef step():\n    return RequestReader()\n",
     "proxy.http1.RequestReader"),
    ("importlib with a literal", "import importlib\nimportlib.import_module('proxy.http1.reader')\n",
     "proxy.http1.reader"),
    ("star import", "from proxy.http1 import *\n", "proxy.http1.*"),
    ("the solutions, even unused", "import lab.solutions.ex1\n", "lab.solutions.ex1"),
    ("the solutions inside demo()", "def demo():\n    from lab.solutions.ex1 import split_head\n",
     "lab.solutions.ex1"),
    ("an unrelated module", "import random\nrandom.random()\n", None),
    ("a syntax error is the loader's to report", "def broken(:\n", None),
]


@pytest.mark.parametrize("source,found", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_find_delegation(tmp_path, source, found):
    path = tmp_path / "student.py"
    path.write_text(source)
    delegation = find_delegation(path, RULES)
    assert (delegation.used if delegation else None) == found


def test_the_message_names_the_file_line_and_what_was_used(tmp_path):
    path = tmp_path / "student.py"
    path.write_text("import proxy.http1 as h\n\n\ndef parse(head):\n    return h.RequestReader()\n")
    delegation = find_delegation(path, RULES)
    assert delegation.line == 5
    message = delegation.message(path, RULES)
    assert message.startswith("student.py line 5 hands the work to proxy.http1.RequestReader (the reference)")
    assert "write this part yourself" in message
