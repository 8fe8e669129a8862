# Turns STARMALLOC_SIZE_CLASSES (a preset name or an explicit list) into the size-class
# table: class sizes, slab geometry and the size -> class lookup array.
# Results: STARMALLOC_CLASS_SIZES (list), STARMALLOC_NB_CLASSES, STARMALLOC_MAX_CLASS and,
# for the sizeclass library, ${STARMALLOC_GENERATED_DIR}/sizeclass_table.inc.

set(SM_PAGE_SIZE 4096)
set(SM_MAX_SLAB_PAGES 64)   # slab sizes are 1..64 pages
set(SM_MAX_SLOTS 256)       # one 256-bit bitmap per slab

# Four classes per doubling from `from` (exclusive) up to `to` (inclusive).
function(_sm_four_per_doubling out from to)
  set(result)
  set(base ${from})
  while(base LESS to)
    math(EXPR step "${base} / 4")
    foreach(i 1 2 3 4)
      math(EXPR s "${base} + ${i} * ${step}")
      list(APPEND result ${s})
    endforeach()
    math(EXPR base "${base} * 2")
  endwhile()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

if(STARMALLOC_SIZE_CLASSES STREQUAL "starmalloc")
  _sm_four_per_doubling(_sm_tail 64 131072)
  set(STARMALLOC_CLASS_SIZES 16 32 64 ${_sm_tail})
elseif(STARMALLOC_SIZE_CLASSES STREQUAL "fine")
  _sm_four_per_doubling(_sm_tail 128 131072)
  set(STARMALLOC_CLASS_SIZES 16 32 48 64 80 96 112 128 ${_sm_tail})
else()
  string(REPLACE "," ";" STARMALLOC_CLASS_SIZES "${STARMALLOC_SIZE_CLASSES}")
  set(_sm_prev 0)
  foreach(s IN LISTS STARMALLOC_CLASS_SIZES)
    if(NOT s MATCHES "^[0-9]+$")
      message(FATAL_ERROR "STARMALLOC_SIZE_CLASSES='${STARMALLOC_SIZE_CLASSES}': '${s}' is neither a preset "
                          "(starmalloc, fine) nor a size in bytes")
    endif()
    math(EXPR _sm_rem "${s} % 16")
    if(s LESS 16 OR s GREATER 262144 OR NOT _sm_rem EQUAL 0)
      message(FATAL_ERROR "STARMALLOC_SIZE_CLASSES: class ${s} must be a multiple of 16 from 16 to 262144")
    endif()
    if(NOT s GREATER _sm_prev)
      message(FATAL_ERROR "STARMALLOC_SIZE_CLASSES: the list must be strictly ascending (${s} after ${_sm_prev})")
    endif()
    set(_sm_prev ${s})
  endforeach()
endif()

list(LENGTH STARMALLOC_CLASS_SIZES STARMALLOC_NB_CLASSES)
list(GET STARMALLOC_CLASS_SIZES -1 STARMALLOC_MAX_CLASS)
list(GET STARMALLOC_CLASS_SIZES 0 _sm_first)
if(NOT _sm_first EQUAL 16)
  message(FATAL_ERROR "STARMALLOC_SIZE_CLASSES: the first class must be 16 (malloc(0) and 16-byte alignment use it)")
endif()
if(STARMALLOC_NB_CLASSES GREATER 255)
  message(FATAL_ERROR "STARMALLOC_SIZE_CLASSES: at most 255 classes (got ${STARMALLOC_NB_CLASSES})")
endif()

# Slab geometry: the fewest pages that hold at least SM_MIN_SLOTS slots (fewer only where
# SM_MAX_SLAB_PAGES cannot) with a tail waste of at most 1/64 of the slab; failing that,
# the least wasteful such slab.
set(SM_MIN_SLOTS 8)
set(_sm_rows "")
foreach(s IN LISTS STARMALLOC_CLASS_SIZES)
  set(best_k 0)
  math(EXPR min_slots "${SM_MAX_SLAB_PAGES} * ${SM_PAGE_SIZE} / ${s}")
  if(min_slots GREATER SM_MIN_SLOTS)
    set(min_slots ${SM_MIN_SLOTS})
  endif()
  foreach(k RANGE 1 ${SM_MAX_SLAB_PAGES})
    math(EXPR bytes "${k} * ${SM_PAGE_SIZE}")
    math(EXPR fit "${bytes} / ${s}")
    if(fit LESS min_slots)
      continue()
    endif()
    math(EXPR slots "${bytes} / ${s}")
    if(slots GREATER SM_MAX_SLOTS)
      set(slots ${SM_MAX_SLOTS})
    endif()
    math(EXPR waste "${bytes} - ${slots} * ${s}")
    if(best_k EQUAL 0)
      set(best_k ${k})
      set(best_waste ${waste})
      set(best_slots ${slots})
    else()
      math(EXPR lhs "${waste} * ${best_k}")
      math(EXPR rhs "${best_waste} * ${k}")
      if(lhs LESS rhs)
        set(best_k ${k})
        set(best_waste ${waste})
        set(best_slots ${slots})
      endif()
    endif()
    math(EXPR waste64 "${waste} * 64")
    if(NOT waste64 GREATER bytes)
      set(best_k ${k})
      set(best_waste ${waste})
      set(best_slots ${slots})
      break()
    endif()
  endforeach()
  # Reciprocals: slot = (offset * slot_recip) >> 32 is exact for offsets that are multiples
  # of the size (others fail the slot * size == offset check); slab = (page * page_recip) >> 30
  # is exact for every page number below 2^24 (Granlund-Montgomery with l = 6).
  math(EXPR slot_recip "((1 << 32) + ${s} - 1) / ${s}")
  math(EXPR page_recip "((1 << 30) + ${best_k} - 1) / ${best_k}")
  string(APPEND _sm_rows "    {${s}u, ${best_k}u, ${best_slots}u, ${slot_recip}u, ${page_recip}u},\n")
endforeach()

# Size -> class: one byte per 16-byte step of the request size.
math(EXPR _sm_lookup_len "${STARMALLOC_MAX_CLASS} / 16 + 1")
set(_sm_lookup "")
set(_sm_index 0)
set(_sm_class 0)
set(_sm_line_count 0)
foreach(s IN LISTS STARMALLOC_CLASS_SIZES)
  math(EXPR last "${s} / 16")
  while(NOT _sm_index GREATER last)
    string(APPEND _sm_lookup "${_sm_class},")
    math(EXPR _sm_index "${_sm_index} + 1")
    math(EXPR _sm_line_count "${_sm_line_count} + 1")
    if(_sm_line_count EQUAL 32)
      string(APPEND _sm_lookup "\n    ")
      set(_sm_line_count 0)
    endif()
  endwhile()
  math(EXPR _sm_class "${_sm_class} + 1")
endforeach()

string(REPLACE ";" ", " SM_CLASS_LIST_C "${STARMALLOC_CLASS_SIZES}")
file(WRITE ${STARMALLOC_GENERATED_DIR}/sizeclass_table.inc.tmp
  "/* Generated by cmake/StarMallocSizeClasses.cmake from STARMALLOC_SIZE_CLASSES=${STARMALLOC_SIZE_CLASSES}. */\n"
  "/* {slot bytes, slab pages, slots per slab, slot reciprocal, page reciprocal} */\n"
  "static const struct sm_sizeclass_info sizeclass_table[SM_NB_CLASSES] = {\n${_sm_rows}};\n\n"
  "/* lookup[(size + 15) / 16] = the smallest class that holds size bytes. */\n"
  "static const uint8_t sizeclass_lookup[${_sm_lookup_len}] = {\n    ${_sm_lookup}\n};\n")
configure_file(${STARMALLOC_GENERATED_DIR}/sizeclass_table.inc.tmp ${STARMALLOC_GENERATED_DIR}/sizeclass_table.inc COPYONLY)
