"""Runs inside the llama.cpp venv: llama.cpp's own convert_hf_to_gguf.py, as a user runs it, with one change.

    python convert_gguf.py LLAMA_CPP_DIR CHECKPOINT_DIR OUT.gguf [CONVERTER OPTIONS...]

The tiny test checkpoints carry the project's own small BPE tokenizer, whose pre-tokenizer hash the converter
does not know (it knows the Hub's). The comparison feeds token ids straight to the engine, so the tokenizer is
never used: an unknown hash is taken as GPT-2's pre-tokenizer instead of stopping the conversion.
Everything the converter reads from config.json and the weights is untouched.
"""

import runpy
import sys

llama_cpp_dir, checkpoint, out = sys.argv[1:4]
sys.path.insert(0, llama_cpp_dir)  # as when the script runs from its own directory (it finds models/ there)

import conversion.base as base  # noqa: E402

_known = base.TextModel.get_vocab_base_pre


def _lenient(self, tokenizer):
    try:
        return _known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"


base.TextModel.get_vocab_base_pre = _lenient
sys.argv = [f"{llama_cpp_dir}/convert_hf_to_gguf.py", checkpoint, "--outtype", "f32", "--outfile", out, *sys.argv[4:]]
runpy.run_path(sys.argv[0], run_name="__main__")
