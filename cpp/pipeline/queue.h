// A blocking queue between stage threads. capacity 0 means unbounded. close() wakes every waiter;
// pop() then drains what is left and returns false once empty.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace omni {

template <typename T>
class BlockingQueue {
public:
    explicit BlockingQueue(size_t capacity = 0) : capacity_(capacity) {}

    // Blocks while full. Returns false (and drops the item) if the queue is closed.
    bool push(T item) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_full_.wait(lock, [&] { return closed_ || capacity_ == 0 || items_.size() < capacity_; });
        if (closed_) return false;
        items_.push_back(std::move(item));
        not_empty_.notify_one();
        return true;
    }

    // Blocks until an item arrives or the queue is closed and empty.
    std::optional<T> pop() {
        std::unique_lock<std::mutex> lock(mutex_);
        not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
        if (items_.empty()) return std::nullopt;
        T item = std::move(items_.front());
        items_.pop_front();
        not_full_.notify_one();
        return item;
    }

    // Drops everything queued (used by stop/break); returns how many items were dropped.
    size_t clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        const size_t n = items_.size();
        items_.clear();
        not_full_.notify_all();
        return n;
    }

    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    size_t size() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return items_.size();
    }

private:
    const size_t capacity_;
    mutable std::mutex mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::deque<T> items_;
    bool closed_ = false;
};

}  // namespace omni
