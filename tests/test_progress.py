"""minibert/corpus/progress.py: texts done, rate and ETA; silent when not asked."""

from __future__ import annotations

from minibert.corpus.progress import Progress


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_shows_rate_and_eta_or_rate_alone():
    s = _Stream()
    p = Progress(100, enabled=True, stream=s)
    p.skip(40)  # a resumed run: done, but not part of this run's rate
    p.start -= 10.0  # as if 10 s had passed
    p.update(20)
    assert p.line().startswith("[##############----------] 60/100 texts  2.0 texts/s  ETA 20s")
    p.close()
    assert s.text.endswith("ETA 20s \n")
    q = Progress(None, enabled=True, stream=_Stream())
    q.start -= 2.0
    q.update(10)
    assert q.line() == "10 texts  5.0 texts/s"
    silent = _Stream()
    Progress(5, enabled=False, stream=silent).update(5)
    assert silent.text == ""
