# Provides the pinned llama.cpp source tree in LLAMA_CPP_SOURCE_DIR.
#
# llama.cpp is never copied into git: it comes from the PyPI sdist of llama-cpp-python, which carries
# llama.cpp commit 0c1e570 under vendor/llama.cpp. The sdist is downloaded once into a cache outside the
# source tree (OMNI_CACHE_DIR, default ~/.cache/omni-app), its sha256 is verified, and only the parts
# the build needs are extracted. LLAMA_CPP_DIR=/path uses a user's own checkout instead.

set(OMNI_LLAMA_SDIST_VERSION "0.3.36")
set(OMNI_LLAMA_SDIST_SHA256 "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
set(OMNI_LLAMA_CPP_COMMIT "0c1e570")

if(LLAMA_CPP_DIR)
  if(NOT EXISTS "${LLAMA_CPP_DIR}/CMakeLists.txt" OR NOT EXISTS "${LLAMA_CPP_DIR}/tools/mtmd")
    message(FATAL_ERROR "LLAMA_CPP_DIR='${LLAMA_CPP_DIR}' is not a llama.cpp checkout (needs CMakeLists.txt and tools/mtmd)")
  endif()
  set(LLAMA_CPP_SOURCE_DIR "${LLAMA_CPP_DIR}")
  set(OMNI_LLAMA_CPP_COMMIT "user-provided")
  message(STATUS "omni: using llama.cpp from LLAMA_CPP_DIR=${LLAMA_CPP_DIR}")
  return()
endif()

if(DEFINED ENV{OMNI_CACHE_DIR} AND NOT "$ENV{OMNI_CACHE_DIR}" STREQUAL "")
  set(_cache "$ENV{OMNI_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(_cache "$ENV{XDG_CACHE_HOME}/omni-app")
else()
  set(_cache "$ENV{HOME}/.cache/omni-app")
endif()

set(_sdist_name "llama_cpp_python-${OMNI_LLAMA_SDIST_VERSION}")
set(_sdist "${_cache}/${_sdist_name}.tar.gz")
set(_tree "${_cache}/llama.cpp-${OMNI_LLAMA_CPP_COMMIT}")
set(_stamp "${_tree}/.omni-extracted")

if(NOT EXISTS "${_stamp}")
  if(EXISTS "${_sdist}")
    file(SHA256 "${_sdist}" _have)
    if(NOT _have STREQUAL OMNI_LLAMA_SDIST_SHA256)
      message(STATUS "omni: cached sdist has the wrong hash, downloading again")
      file(REMOVE "${_sdist}")
    endif()
  endif()
  if(NOT EXISTS "${_sdist}")
    find_package(Python COMPONENTS Interpreter REQUIRED)
    message(STATUS "omni: downloading llama-cpp-python==${OMNI_LLAMA_SDIST_VERSION} sdist (77 MB, llama.cpp ${OMNI_LLAMA_CPP_COMMIT}) into ${_cache}")
    file(MAKE_DIRECTORY "${_cache}")
    # --no-build-isolation: pip only needs the sdist's metadata; an isolated metadata build would
    # install a second CMake first (minutes) for nothing.
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -m pip download --no-deps --no-binary :all: --no-build-isolation
              "llama-cpp-python==${OMNI_LLAMA_SDIST_VERSION}" -d "${_cache}"
      RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0 OR NOT EXISTS "${_sdist}")
      message(FATAL_ERROR "omni: could not download llama-cpp-python==${OMNI_LLAMA_SDIST_VERSION} with pip (exit ${_rc}). "
                          "Check network access to PyPI, or set LLAMA_CPP_DIR to a llama.cpp checkout.")
    endif()
  endif()
  file(SHA256 "${_sdist}" _have)
  if(NOT _have STREQUAL OMNI_LLAMA_SDIST_SHA256)
    message(FATAL_ERROR "omni: ${_sdist} has sha256 ${_have}, expected ${OMNI_LLAMA_SDIST_SHA256}; delete it and retry")
  endif()
  message(STATUS "omni: extracting llama.cpp sources from ${_sdist}")
  set(_prefix "${_sdist_name}/vendor/llama.cpp")
  file(REMOVE_RECURSE "${_tree}.tmp")
  file(ARCHIVE_EXTRACT INPUT "${_sdist}" DESTINATION "${_tree}.tmp"
       PATTERNS "${_prefix}/CMakeLists.txt" "${_prefix}/LICENSE" "${_prefix}/cmake" "${_prefix}/ggml"
                "${_prefix}/src" "${_prefix}/include" "${_prefix}/vendor" "${_prefix}/tools/mtmd"
                "${_prefix}/common/build-info.cpp.in" "${_prefix}/licenses")
  file(REMOVE_RECURSE "${_tree}")
  file(RENAME "${_tree}.tmp/${_prefix}" "${_tree}")
  file(REMOVE_RECURSE "${_tree}.tmp")
  file(WRITE "${_stamp}" "${OMNI_LLAMA_SDIST_SHA256}\n")
endif()

set(LLAMA_CPP_SOURCE_DIR "${_tree}")
message(STATUS "omni: llama.cpp ${OMNI_LLAMA_CPP_COMMIT} at ${LLAMA_CPP_SOURCE_DIR}")
