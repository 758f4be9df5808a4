// Stop strings over streamed text: holds back the tail that could still become a stop string, releases text as
// soon as it cannot, and cuts the output before the first stop string found (also across token boundaries).
// One per request; engine thread only.
#pragma once

#include <string>
#include <vector>

namespace dsi {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // Appends `text`; returns the text that is now safe to emit. Sets stopped() when a stop string appeared (the
  // returned text then ends right before it and everything after is dropped).
  std::string push(const std::string& text);
  // End of generation: the held-back tail.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace dsi
