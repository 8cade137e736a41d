# libFuzzer targets (clang, -DCO_FUZZ=ON), included from the top-level CMakeLists.txt so that the
# library's per-file kernel flags apply. The library is compiled again, instrumented for the
# fuzzer's coverage and with ASan + UBSan, so libFuzzer sees the library's branches (not only the
# harness's) and the sanitizers check the library's code. Run: tests/fuzz/run.sh SECONDS.
add_library(continual_fuzzlib STATIC ${CO_LIB_SOURCES})
target_include_directories(continual_fuzzlib PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(continual_fuzzlib PRIVATE ${CO_BLAS_DEFS})
target_compile_options(continual_fuzzlib PRIVATE ${CO_WARN}
  -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
target_link_libraries(continual_fuzzlib PUBLIC PkgConfig::CJSON m Threads::Threads ${CO_BLAS_LIBS})
foreach(t load restore step npy nets)
  add_executable(fuzz_${t} tests/fuzz/fuzz_${t}.c)
  target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_${t} PRIVATE continual_fuzzlib)
  target_compile_definitions(fuzz_${t} PRIVATE
    CO_FUZZ_DEFAULT_MODEL="${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/tiny.safetensors")
endforeach()
target_sources(fuzz_npy PRIVATE src/cli/npy.c)
target_include_directories(fuzz_npy PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
