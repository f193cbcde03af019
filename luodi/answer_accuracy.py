"""`luodi answers`: accuracy of greedy decoding, self-consistency (vote=N) and best-of-N on questions with
checkable answers (configs/questions/*.yaml: an instruction and {question, answer} pairs), side by side.

Each question goes through the model's chat template with the instruction appended; a reply is right when the
default answer extractor (multi_sample.extract_answer) gives the expected answer. Samples are drawn at
`temperature` with a seed per question, so a run repeats.
"""

from pathlib import Path

from .errors import LuodiError
from .inputs import read_text_file
from .multi_sample import extract_answer


def load_questions(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(instruction, [(question, expected answer)]) of a questions file; a one-line error for a malformed one."""
    import yaml

    data = yaml.safe_load(read_text_file(path, "questions file"))
    entries = data.get("questions") if isinstance(data, dict) else None
    if not entries or not all(isinstance(e, dict) and {"question", "answer"} <= set(e) for e in entries):
        raise LuodiError(f"{path}: needs a 'questions' list of {{question, answer}} entries")
    return str(data.get("instruction", "")), [(str(e["question"]), str(e["answer"])) for e in entries]


def answer_accuracy(lm, path: Path, samples: int = 8, temperature: float = 0.7, max_new_tokens: int = 128,
                    seed: int = 0) -> dict:
    """Per question and overall: whether greedy, vote=samples and best_of=samples answer right."""
    instruction, questions = load_questions(path)
    rows = []
    for i, (question, expected) in enumerate(questions):
        prompt = [{"role": "user", "content": f"{question}\n{instruction}".strip()}]
        sampling = {"temperature": temperature, "seed": seed + i, "max_new_tokens": max_new_tokens}
        greedy = lm.generate(prompt, max_new_tokens=max_new_tokens)
        voted = lm.generate(prompt, vote=samples, **sampling)
        best = lm.generate(prompt, best_of=samples, **sampling)
        rows.append({"question": question, "expected": expected, "greedy": extract_answer(greedy.text),
                     "vote": voted.answer, "votes": voted.votes, "best_of": extract_answer(best.text)})
    accuracy = {f"{kind}_accuracy": sum(r[kind] == r["expected"] for r in rows) / len(rows)
                for kind in ("greedy", "vote", "best_of")}
    return {"questions_file": str(path), "samples": samples, "temperature": temperature,
            "max_new_tokens": max_new_tokens, **accuracy, "questions": rows}
