"""Times the test suite like for like with an older commit's suite (issue 14's "the test suite is
measurably faster"): from a configured and built tree, run with CTest -j2 only the tests that the
older commit had, and inside each Catch file only the test cases that the older commit had (by
name, read from `git show <commit>:tests/test_*.cpp`).

  python3 bench/suite_time.py BUILD [--like 2d079de] [-j 2]

It writes a CTestTestfile.cmake of its own into BUILD/suite-like-<commit> (the build tree's own
is left alone) and prints CTest's total. Renamed cases are mapped in RENAMED below.
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)

# The CTest tests 2d079de registered besides its Catch cases (tests/CMakeLists.txt there).
OLD_TESTS = {
    "2d079de": ["reference.models", "consumer.package", "consumer.fetchcontent", "cli.fashion_mnist",
                "distributed.equivalence", "distributed.resume", "distributed.failure", "reference.tiny_dataset",
                "example.ssld", "example.dml", "example.udml", "example.afd", "example.dkd", "example.dist",
                "example.mgd", "example.fashion_mnist_demo"],
}
# Cases renamed since (old name -> new name).
RENAMED = {
    "the seven recipes build from JSON, run forward and backward, and name their terms":
        "the recipes build from JSON, run forward and backward, and name their terms",
}


def git(*args):
    return subprocess.run(["git", "-C", SOURCE] + list(args), check=True, capture_output=True, text=True).stdout


def old_cases(commit):
    """{file stem: [case names]} of the Catch files at `commit`."""
    cases = {}
    for path in git("ls-tree", "--name-only", commit, "tests/").split():
        m = re.fullmatch(r"tests/test_(\w+)\.cpp", path)
        if m:
            names = re.findall(r'TEST_CASE\("((?:[^"\\]|\\.)*)"', git("show", commit + ":" + path))
            cases[m.group(1)] = [RENAMED.get(n, n) for n in names]
    return cases


def spec(names):
    """A Catch2 v2 test spec matching exactly these names (comma = or; specials escaped)."""
    return ",".join(re.sub(r'([\\,\[\]*~"])', r"\\\1", n) for n in names)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("build")
    p.add_argument("--like", default="2d079de")
    p.add_argument("-j", type=int, default=2)
    a = p.parse_args()
    if a.like not in OLD_TESTS:
        sys.exit("suite_time.py: no test list for %s (known: %s)" % (a.like, ", ".join(OLD_TESTS)))
    testfile = open(os.path.join(a.build, "tests", "CTestTestfile.cmake")).read()
    cases = old_cases(a.like)
    binary = os.path.join(os.path.abspath(a.build), "tests", "distill_tests")
    lines, found = [], set()
    for name in OLD_TESTS[a.like]:
        for line in testfile.splitlines():
            if line.startswith(("add_test([=[%s]=]" % name, "set_tests_properties([=[%s]=]" % name)):
                lines.append(line)
                found.add(name)
    for stem, names in cases.items():
        listed = subprocess.run([binary, spec(names), "--list-test-names-only"], capture_output=True,
                                text=True).stdout.split("\n")
        missing = set(names) - {l for l in listed}
        if missing:
            sys.exit("suite_time.py: cases of %s's test_%s.cpp not found: %s" % (a.like, stem, sorted(missing)))
        name = "unit." + stem
        lines.append("add_test([=[%s]=] \"%s\" [=[%s]=])" % (name, binary, spec(names)))
        props = [l for l in testfile.splitlines() if l.startswith("set_tests_properties([=[%s]=]" % name)]
        lines += props
        found.add(name)
    missing = set(OLD_TESTS[a.like]) - found
    if missing:
        sys.exit("suite_time.py: tests not in this build: %s" % sorted(missing))
    # Each test runs where CTest runs it in the build tree.
    lines += ["set_tests_properties([=[%s]=] PROPERTIES WORKING_DIRECTORY [=[%s]=])" %
              (name, os.path.join(os.path.abspath(a.build), "tests")) for name in sorted(found)]
    work = os.path.join(a.build, "suite-like-" + a.like)
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "CTestTestfile.cmake"), "w") as f:
        f.write("\n".join(lines) + "\n")
    count = sum(len(v) for v in cases.values())
    print("like %s: %d CTest tests and %d Catch cases in %d files, ctest -j%d" %
          (a.like, len(OLD_TESTS[a.like]), count, len(cases), a.j), flush=True)
    since = time.monotonic()
    done = subprocess.run(["ctest", "--test-dir", work, "-j%d" % a.j, "--output-on-failure"])
    print("wall %.1f s" % (time.monotonic() - since))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
