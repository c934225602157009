"""Explicit SIMD vectors for Numba kernels: LLVM ``<W x float>`` values as a Numba type.

Numba vectorises loops only when LLVM can prove them independent, and keeps no small
array in registers across iterations.  A recursion advanced for ``W`` cells at once
(time-major data, one vector per time step) needs both: its state must stay in
registers from one step to the next.  The intrinsics here give a kernel first-class
vector values — loads, stores, arithmetic, selects — so LLVM keeps the state in
registers and emits vector instructions of the host's width (``<8 x float>`` is one AVX2
register, half an AVX-512 one, or two NEON ones).

Every operation is an IEEE operation on each lane with no fast-math flag, so a lane
computes exactly what the scalar code computes for that cell: no reassociation, no fused
multiply-add (LLVM contracts only with the ``contract`` flag, which is never set).
``maximum``/``minimum`` reproduce Numba's scalar ``max``/``min`` (a compare and a select),
signed zeros included.
"""

from __future__ import annotations

from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model
from llvmlite import ir

__all__ = [
    "Vector",
    "add",
    "load",
    "maximum",
    "minimum",
    "mul",
    "splat",
    "store",
    "sub",
    "where",
    "narrow",
    "where_greater_equal",
    "widen",
]


class Vector(types.Type):
    """``width`` lanes of ``dtype`` (float32 or float64) held as one LLVM vector value."""

    def __init__(self, width: int, dtype: types.Float) -> None:
        self.width = int(width)
        self.dtype = dtype
        super().__init__(name=f"Vector({self.width}, {dtype})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.width))


def _width(value) -> int:
    if not isinstance(value, types.IntegerLiteral):
        raise TypingError("the vector width must be a compile-time integer constant")
    return int(value.literal_value)


def _vector_pointer(context, builder, array_type, array, offset, width):
    data = context.make_array(array_type)(context, builder, array).data
    element = context.get_value_type(array_type.dtype)
    return builder.bitcast(builder.gep(data, [offset]), ir.VectorType(element, width).as_pointer())


@intrinsic(prefer_literal=True)
def load(typingctx, array, offset, width):
    """``array[offset : offset + width]`` of a 1-D contiguous float array, as a vector."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and isinstance(array.dtype, types.Float)):
        raise TypingError("load() takes a 1-D float array")
    lanes = _width(width)

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1], lanes)
        return builder.load(pointer, align=array.dtype.bitwidth // 8)

    return Vector(lanes, array.dtype)(array, offset, width), codegen


@intrinsic
def store(typingctx, array, offset, vector):
    """``array[offset : offset + width] = vector``."""
    if not (isinstance(array, types.Array) and isinstance(vector, Vector) and array.dtype == vector.dtype):
        raise TypingError("store() takes a float array and a vector of its dtype")

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1], vector.width)
        builder.store(args[2], pointer, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, offset, vector), codegen


@intrinsic(prefer_literal=True)
def splat(typingctx, value, width):
    """A vector with ``value`` (float32 or float64) in every lane."""
    if not isinstance(value, types.Float):
        raise TypingError("splat() takes a float scalar")
    lanes = _width(width)

    def codegen(context, builder, signature, args):
        vector_type = ir.VectorType(context.get_value_type(value), lanes)
        one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), zeros)

    return Vector(lanes, value)(value, width), codegen


def _same_vectors(a, b) -> Vector:
    if not (isinstance(a, Vector) and isinstance(b, Vector) and a == b):
        raise TypingError(f"expected two vectors of the same type, got {a} and {b}")
    return a


def _arithmetic(instruction: str):
    def typer(typingctx, a, b):
        vector = _same_vectors(a, b)

        def codegen(context, builder, signature, args):
            return getattr(builder, instruction)(args[0], args[1])

        return vector(a, b), codegen

    typer.__name__ = instruction
    return intrinsic(typer)


add = _arithmetic("fadd")
sub = _arithmetic("fsub")
mul = _arithmetic("fmul")


def _select_by_compare(predicate: str):
    # Numba's scalar max(a, b) is ``b if b > a else a`` and min(a, b) is
    # ``b if b < a else a`` (ordered compares): the same compare and select per lane.
    def typer(typingctx, a, b):
        vector = _same_vectors(a, b)

        def codegen(context, builder, signature, args):
            take_b = builder.fcmp_ordered(predicate, args[1], args[0])
            return builder.select(take_b, args[1], args[0])

        return vector(a, b), codegen

    return typer


maximum = intrinsic(_select_by_compare(">"))
minimum = intrinsic(_select_by_compare("<"))


@intrinsic
def where(typingctx, mask, a, b):
    """Lane-wise ``a if mask != 0 else b`` (``mask``: a float32 vector of 0/1 flags)."""
    vector = _same_vectors(a, b)
    if not (isinstance(mask, Vector) and mask.width == vector.width):
        raise TypingError("where() takes a mask vector of the same width")

    def codegen(context, builder, signature, args):
        zero = ir.Constant(ir.VectorType(context.get_value_type(mask.dtype), mask.width), None)
        return builder.select(builder.fcmp_unordered("!=", args[0], zero), args[1], args[2])

    return vector(mask, a, b), codegen


@intrinsic
def where_greater_equal(typingctx, a, b, x, y):
    """Lane-wise ``x if a >= b else y`` (an ordered compare, as Numba's scalar ``>=``)."""
    compared = _same_vectors(a, b)
    vector = _same_vectors(x, y)
    if compared.width != vector.width:
        raise TypingError("where_greater_equal() takes vectors of one width")

    def codegen(context, builder, signature, args):
        return builder.select(builder.fcmp_ordered(">=", args[0], args[1]), args[2], args[3])

    return vector(a, b, x, y), codegen


@intrinsic
def widen(typingctx, vector):
    """float32 lanes → float64 lanes (exact)."""
    if not (isinstance(vector, Vector) and vector.dtype == types.float32):
        raise TypingError("widen() takes a float32 vector")
    wide = Vector(vector.width, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fpext(args[0], ir.VectorType(ir.DoubleType(), vector.width))

    return wide(vector), codegen



@intrinsic
def narrow(typingctx, vector):
    """float64 lanes → float32 lanes (rounded to nearest, as a scalar ``np.float32(v)``)."""
    if not (isinstance(vector, Vector) and vector.dtype == types.float64):
        raise TypingError("narrow() takes a float64 vector")
    slim = Vector(vector.width, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fptrunc(args[0], ir.VectorType(ir.FloatType(), vector.width))

    return slim(vector), codegen
